"""Convert official ``.pth`` checkpoints (CodeFormer, GFPGAN) to ``.safetensors`` + ``config.json``.

The pickle is opened only with ``torch.load(weights_only=True, map_location="cpu")``; the
output carries its config twice: in the safetensors metadata (key ``config``, JSON) so the file
alone is self-describing, and in ``config.json`` for people and the Hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Key prefixes that only one architecture has (state-dict key names of the released checkpoints).
_SIGNATURES = {
    "codeformer": ("position_emb", "quantize.embedding.weight", "idx_pred_layer.", "ft_layers."),
    "gfpgan-v1.4": ("conv_body_first.", "stylegan_decoder.", "condition_scale.", "final_linear."),
}
# container keys of official checkpoints, in order of preference (EMA weights first)
_STATE_KEYS = ("params_ema", "params", "state_dict")


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, Any], str | None]:
    """Tensors of a ``.pth``/``.safetensors`` checkpoint and the container key they came from.

    Official ``.pth`` files are dicts holding ``params_ema`` (preferred) or ``params``; a plain
    state dict is accepted too. Raises ValueError naming the file when no tensors are found.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or a pickle needing arbitrary code
        raise ValueError(f"{path}: cannot be read as a weights-only torch checkpoint ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    key = next((k for k in _STATE_KEYS if isinstance(obj.get(k), dict)), None)
    state = obj[key] if key else obj
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not state or bad:
        raise ValueError(
            f"{path}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:8]))})"
            if key is None
            else f"{path}: entry {key!r} holds non-tensor values (e.g. {bad[0]!r})"
        )
    return state, key


def detect_architecture(keys) -> str:
    """``"codeformer"`` or ``"gfpgan-v1.4"`` from state-dict key names; ValueError if neither."""
    keys = list(keys)
    scores = {
        arch: sum(any(k.startswith(sig) for k in keys) for sig in sigs) for arch, sigs in _SIGNATURES.items()
    }
    best = max(scores, key=scores.get)
    if scores[best] < 2 or list(scores.values()).count(scores[best]) > 1:
        raise ValueError(
            "cannot tell the architecture from the keys (neither CodeFormer nor GFPGAN); pass --arch"
        )
    return best


def match_preset(state: dict[str, Any]) -> str | None:
    """The ``create_model`` preset whose parameter names and shapes equal ``state``'s, if any.

    Models are built on the ``meta`` device (no memory, no init cost); presets whose module
    cannot be imported are skipped. Presets of the detected family are tried first.
    """
    import torch

    try:
        from iqpfr.models.factory import PRESETS, create_model
    except ImportError:
        return None
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    try:
        family = detect_architecture(state)
    except ValueError:
        family = ""
    for name in sorted(PRESETS, key=lambda n: (not n.startswith(family.split("-")[0]), n)):
        try:
            with torch.device("meta"):
                model = create_model(name)
        except Exception:  # a preset whose module is not written/installed: not a candidate
            continue
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            return name
    return None


def convert_checkpoint(
    src: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    architecture: str | None = None,
    licence: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``src`` as safetensors + config.json; returns ``(weights_path, config_path)``.

    ``out`` is a folder (gets ``model.safetensors`` and ``config.json``; default: a folder named
    after ``src`` next to it) or a ``.safetensors`` file (config goes to ``<stem>.json`` beside it).
    ``architecture`` defaults to the preset whose shapes match (else the family detected from
    the key names). Existing outputs are kept
    (FileExistsError) unless ``overwrite``. Writes are atomic.
    """
    from safetensors.torch import save_file

    from iqpfr import __version__
    from iqpfr.utils.fs import atomic_write_text, atomic_write_with
    from iqpfr.weights.cache import sha256_file
    from iqpfr.weights.zoo import entry_for_filename

    src = Path(src)
    weights_path, config_path = output_paths(src, out)
    for path in (weights_path, config_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: exists (pass --overwrite to replace it)")

    state, source_key = load_state_dict(src)
    architecture = architecture or match_preset(state) or detect_architecture(state)
    source_sha256 = sha256_file(src)
    entry = entry_for_filename(src.name)
    if licence is None:
        known = entry if entry is not None and entry.sha256 == source_sha256 else None
        licence = known.licence if known else "unknown: the licence of the source checkpoint applies"
    config = {
        "architecture": architecture,
        "model_args": {},
        "format": "iqpfr-safetensors-v1",
        "source_file": src.name,
        "source_sha256": source_sha256,
        "source_key": source_key,
        "licence": licence,
        "converted_by": f"iqpfr {__version__} (iqpfr weights convert)",
    }
    # safetensors refuses tensors sharing memory and needs contiguous ones
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    metadata = {"config": json.dumps(config, sort_keys=True), "format": "pt"}
    atomic_write_with(weights_path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return weights_path, config_path


def output_paths(src: Path, out: str | os.PathLike | None) -> tuple[Path, Path]:
    """The ``(weights, config)`` paths ``convert_checkpoint`` writes for ``src`` and ``out``."""
    if out is None:
        folder = src.with_suffix("")
        if folder == src:
            folder = src.with_name(src.name + "_converted")
        return folder / "model.safetensors", folder / "config.json"
    out = Path(out)
    if out.suffix == ".safetensors":
        return out, out.with_suffix(".json")
    return out / "model.safetensors", out / "config.json"


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config stored in a converted ``.safetensors`` file's metadata ({} when absent)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta["config"]) if "config" in meta else {}
