"""AUTOMATIC1111 / Forge extension: adds "IQPFR" to Settings > Face restoration.

The web UI calls ``restore(np_image)`` on the chosen restorer with the whole generated image,
(H, W, 3) uint8 RGB, and expects the same back. The restorer is ``iqpfr.FaceRestorer`` (its own
detection, alignment and paste-back), loaded on first use; fidelity and the quality target are
settings of their own (``iqpfr_fidelity``: -1 = auto, each face's quality sets w), so no keyword
of another restorer's network can silently switch them off.
"""

from __future__ import annotations

from modules import face_restoration, script_callbacks, shared

NAME = "IQPFR"
SETTINGS_SECTION = ("face-restoration", "Face restoration")
DEFAULTS = {"iqpfr_model": "", "iqpfr_fidelity": -1.0, "iqpfr_quality": 0.9}


def _option(key: str):
    data = getattr(shared.opts, "data", {}) or {}
    return data.get(key, DEFAULTS[key])


def _device() -> str:
    """The web UI's device for face restorers (its --device-id / --use-cpu settings)."""
    try:
        from modules import devices

        return str(getattr(devices, "device_codeformer", None) or devices.device)
    except Exception:
        return "auto"


class FaceRestorerIQPFR(face_restoration.FaceRestoration):
    """The restorer the web UI lists; one ``FaceRestorer`` per model setting, built on first use."""

    def __init__(self) -> None:
        self._restorer = None
        self._model = None

    def name(self) -> str:
        return NAME

    def restorer(self):
        from iqpfr.integrations.hosts import DEFAULT_MODEL, load_restorer

        model = _option("iqpfr_model") or DEFAULT_MODEL
        if self._restorer is None or model != self._model:
            self._restorer, self._model = load_restorer(model, device=_device()), model
        return self._restorer

    def restore(self, np_image, w: float | None = None):
        from iqpfr.integrations.hosts import parse_fidelity, restore_uint8_rgb

        w = float(_option("iqpfr_fidelity")) if w is None else float(w)
        fidelity = parse_fidelity(w, auto=w < 0)
        return restore_uint8_rgb(self.restorer(), np_image, fidelity=fidelity, quality=float(_option("iqpfr_quality")))


def on_ui_settings() -> None:
    import gradio as gr

    opts = [
        ("iqpfr_model", shared.OptionInfo("", "IQPFR model: empty = the embedded default, or a zoo name / weight file")),
        ("iqpfr_fidelity", shared.OptionInfo(-1.0, "IQPFR fidelity w (-1 = auto: each face's quality decides)",
                                             gr.Slider, {"minimum": -1.0, "maximum": 1.0, "step": 0.01})),
        ("iqpfr_quality", shared.OptionInfo(0.9, "IQPFR quality target", gr.Slider,
                                            {"minimum": 0.0, "maximum": 1.0, "step": 0.01})),
    ]
    for key, info in opts:
        info.section = SETTINGS_SECTION
        shared.opts.add_option(key, info)


def register() -> FaceRestorerIQPFR:
    """Add the restorer to ``shared.face_restorers`` once (the UI reloads scripts)."""
    for existing in shared.face_restorers:
        if getattr(existing, "name", lambda: None)() == NAME:
            return existing
    restorer = FaceRestorerIQPFR()
    shared.face_restorers.append(restorer)
    return restorer


register()
script_callbacks.on_ui_settings(on_ui_settings)
