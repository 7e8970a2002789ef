"""The ComfyUI node pack and the AUTOMATIC1111/Forge extension, against their hosts' contracts
(neither host installs from the package registries), restoring as FaceRestorer does."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "iqpfr" / "assets" / "astronaut_degraded.jpg"
COMFY = ROOT / "integrations" / "comfyui-iqpfr"
A1111 = ROOT / "integrations" / "sd-webui-iqpfr"


def _import_folder(folder: Path, name: str):
    """Import a plug-in folder as a package, as its host does."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def restorer():
    pytest.importorskip("dlib", reason="needs the face extra (dlib) for detection")
    from iqpfr.restorer import FaceRestorer

    return FaceRestorer.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Two small whole photos (uint8 RGB): the sample and its mirror image, 256 px."""
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((256, 256), Image.BICUBIC))
    return np.stack([image, image[:, ::-1].copy()])


# ------------------------------------------------------------------------------------- ComfyUI


def test_comfy_pack_metadata_and_node_contract():
    tomllib = pytest.importorskip("tomllib", reason="needs Python 3.11's tomllib")
    meta = tomllib.loads((COMFY / "pyproject.toml").read_text())
    assert {"PublisherId", "DisplayName"} <= set(meta["tool"]["comfy"]) and meta["project"]["name"]
    pack = _import_folder(COMFY, "comfyui_iqpfr")
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        inputs = cls.INPUT_TYPES()
        assert "required" in inputs and isinstance(cls.RETURN_TYPES, tuple)
        assert callable(getattr(cls, cls.FUNCTION)) and cls.CATEGORY.startswith("image/")
        for spec in [*inputs["required"].values(), *inputs.get("optional", {}).values()]:
            kind = spec[0]
            assert isinstance(kind, (str, list)), spec  # a type name, or a list of choices
            if kind in ("FLOAT", "INT"):
                options = spec[1]
                assert options["min"] <= options["default"] <= options["max"]
    restore = pack.NODE_CLASS_MAPPINGS["IQPFRRestoreFaces"]
    assert restore.RETURN_TYPES == ("IMAGE", "IMAGE")
    model_menu = pack.NODE_CLASS_MAPPINGS["IQPFRLoadRestorer"].INPUT_TYPES()["required"]["model"][0]
    assert model_menu[0] == "iqpfr (embedded default)"


def test_comfy_nodes_restore_a_batch_as_face_restorer_does(restorer, photos):
    pack = _import_folder(COMFY, "comfyui_iqpfr")
    (loaded,) = pack.NODE_CLASS_MAPPINGS["IQPFRLoadRestorer"]().load("iqpfr (embedded default)", "dlib-hog", "cpu")
    assert loaded.face_size == restorer.face_size
    node = pack.NODE_CLASS_MAPPINGS["IQPFRRestoreFaces"]()
    batch = torch.from_numpy(photos.astype(np.float32) / 255.0)  # ComfyUI IMAGE (B, H, W, 3)
    kwargs = dict(auto_fidelity=False, fidelity=0.5, quality_target=0.9, face_upsample=False)
    images, faces = node.restore(batch, restorer, **kwargs)
    assert images.shape == batch.shape and images.dtype == torch.float32
    assert faces.ndim == 4 and faces.shape[1:] == (restorer.face_size, restorer.face_size, 3) and len(faces) >= 2
    for got, image, photo in zip(images, batch, photos):
        # FaceRestorer on the same pixels (a float photo; a uint8 one differs by the uint8 crop's rounding)
        expected = restorer.restore(image.numpy(), fidelity=0.5, quality=0.9, face_upsample=False).image
        diff = np.abs(got.numpy() - expected) * 255.0
        assert diff.max() <= 1.0, diff.max()
        assert np.abs(got.numpy() * 255.0 - photo).mean() > 0.1  # the faces were restored
    # fidelity and the quality target change the output
    images_w1, _ = node.restore(batch, restorer, **{**kwargs, "fidelity": 1.0})
    images_q, _ = node.restore(batch, restorer, **{**kwargs, "quality_target": 0.1})
    assert (images_w1 - images).abs().max() > 1e-3 and (images_q - images).abs().max() > 1e-3


# --------------------------------------------------------------------------- AUTOMATIC1111 / Forge


@pytest.fixture
def webui(monkeypatch):
    """The parts of the web UI's ``modules`` package an extension script touches."""
    modules = types.ModuleType("modules")
    face_restoration = types.ModuleType("modules.face_restoration")

    class FaceRestoration:  # the web UI's base class
        def name(self):
            return "None"

        def restore(self, np_image):
            return np_image

    face_restoration.FaceRestoration = FaceRestoration
    shared = types.ModuleType("modules.shared")
    shared.face_restorers = []
    shared.opts = types.SimpleNamespace(data={}, added={})
    shared.opts.add_option = lambda key, info: shared.opts.added.__setitem__(key, info)
    shared.OptionInfo = lambda default, label, *args, **kw: types.SimpleNamespace(default=default, label=label)
    callbacks = types.ModuleType("modules.script_callbacks")
    callbacks.registered = []
    callbacks.on_ui_settings = callbacks.registered.append
    devices = types.ModuleType("modules.devices")
    devices.device = torch.device("cpu")
    devices.device_codeformer = torch.device("cpu")
    for name, module in [("modules", modules), ("modules.face_restoration", face_restoration),
                         ("modules.shared", shared), ("modules.script_callbacks", callbacks),
                         ("modules.devices", devices)]:
        monkeypatch.setitem(sys.modules, name, module)
        if name != "modules":
            setattr(modules, name.split(".")[1], module)
    return types.SimpleNamespace(shared=shared, callbacks=callbacks)


def _load_extension():
    path = A1111 / "scripts" / "iqpfr_face_restoration.py"
    spec = importlib.util.spec_from_file_location("iqpfr_face_restoration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a1111_extension_registers_once_and_restores_like_face_restorer(webui, restorer, photos):
    _load_extension()
    _load_extension()  # the web UI reloads scripts: still one restorer
    names = [r.name() for r in webui.shared.face_restorers]
    assert names == ["IQPFR"] and len(webui.callbacks.registered) == 2
    extension = webui.shared.face_restorers[0]
    extension._restorer, extension._model = restorer, "iqpfr (embedded default)"  # reuse the loaded network
    webui.shared.opts.data.update(iqpfr_fidelity=0.5, iqpfr_quality=0.9)
    photo = photos[0]
    # the web UI's own default (face up-sampling as the CLI decides) would take minutes here
    from iqpfr.integrations import hosts

    got = hosts.restore_uint8_rgb(restorer, photo, fidelity=0.5, quality=0.9, face_upsample=False)
    expected = restorer.restore(photo, fidelity=0.5, quality=0.9, face_upsample=False).image
    assert got.dtype == np.uint8 and got.shape == photo.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    # the extension's settings reach the restorer: fidelity and quality change the output
    calls = []
    original = restorer.restore

    def spy(image, **kw):
        calls.append(kw)
        return original(image, **{**kw, "face_upsample": False})

    restorer.restore = spy
    try:
        out_half = extension.restore(photo)
        webui.shared.opts.data.update(iqpfr_fidelity=1.0)
        out_one = extension.restore(photo)
        webui.shared.opts.data.update(iqpfr_fidelity=-1.0)
        extension.restore(photo)
    finally:
        del restorer.restore
    assert [c["fidelity"] for c in calls] == [0.5, 1.0, "auto"] and calls[0]["quality"] == 0.9
    assert out_half.dtype == np.uint8 and np.abs(out_half.astype(int) - out_one.astype(int)).max() > 0
    assert np.abs(out_half.astype(int) - expected.astype(int)).max() <= 1
