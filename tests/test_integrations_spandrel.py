"""spandrel loads every kind of iqpfr checkpoint as its own architecture, restores exactly as
iqpfr does, and leaves official CodeFormer / GFPGAN layouts to spandrel's own detectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

spandrel = pytest.importorskip("spandrel", reason="needs the spandrel extra: pip install 'iqpfr[spandrel]'")

import iqpfr.integrations.spandrel as iqpfr_spandrel  # noqa: E402  (registers the architectures)
from iqpfr.models.factory import create_model  # noqa: E402
from iqpfr.weights.checkpoint import CONFIG_TENSOR_KEY, load_model, save_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "src" / "iqpfr" / "weights" / "iqpfr-128.safetensors"


@pytest.fixture(params=["plain", "extra_arches"])
def loader(request):
    """spandrel's loader alone, and with spandrel_extra_arches (CodeFormer's detector) installed."""
    if request.param == "extra_arches":
        extra = pytest.importorskip("spandrel_extra_arches", reason="needs spandrel_extra_arches")
        extra.install(ignore_duplicates=True)
    return spandrel.ModelLoader()


def _faces(size: int, n: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(3))


def _reference(model: torch.nn.Module, faces: torch.Tensor, w: float = 0.5, quality=None) -> torch.Tensor:
    """FaceRestorer.restore_aligned on the same network."""
    from iqpfr.restorer import FaceRestorer

    return FaceRestorer(model, device="cpu").restore_aligned(faces, fidelity=w, quality=quality)


def test_embedded_default_loads_as_iqpfr_and_restores_exactly(loader):
    descriptor = loader.load_from_file(EMBEDDED)
    assert descriptor.architecture.id == "iqpfr.IQPFR" and descriptor.purpose == "FaceSR"
    assert "iqpfr-128" in descriptor.tags and "guessed-config" not in descriptor.tags
    assert descriptor.size_requirements.minimum == 128 and descriptor.scale == 1
    faces = _faces(128)
    expected = _reference(load_model(EMBEDDED), faces)
    assert (descriptor(faces) - expected).abs().max().item() <= 1e-4
    # other settings through the module-level helper; fidelity changes the result
    w1 = iqpfr_spandrel.restore_aligned(descriptor, faces, fidelity=1.0)
    assert (w1 - _reference(load_model(EMBEDDED), faces, w=1.0)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("preset,arch_id", [
    ("iqpfr-tiny", "iqpfr.IQPFR"),
    ("codeformer-tiny+q", "iqpfr.CodeFormerQ"),
    ("gfpgan-tiny+q", "iqpfr.GFPGANQ"),
])
def test_saved_checkpoints_describe_themselves_to_spandrel(tmp_path, loader, preset, arch_id):
    torch.manual_seed(0)
    # shape-less arguments away from the preset's: only the file's own record can restore them
    overrides = {"n_head": 2, "adain": False} if preset.startswith("iqpfr") else {}
    model = create_model(preset, **overrides).eval()
    with torch.no_grad():  # a non-zero adapter, so the quality target matters
        model.quality_adapter.weight.normal_(0, 0.5) if hasattr(model, "quality_adapter") else None
    path = save_model(model, tmp_path / "model.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert CONFIG_TENSOR_KEY in fh.keys()
    descriptor = loader.load_from_file(path)
    assert descriptor.architecture.id == arch_id
    net = descriptor.model
    assert net.config == model.config
    faces = _faces(64, 2)
    for w, q in ((0.5, None), (0.0, 0.2), (1.0, 0.95)):
        got = iqpfr_spandrel.restore_aligned(descriptor, faces, fidelity=w, quality=q)
        assert (got - _reference(model, faces, w, q)).abs().max().item() <= 1e-4
    # iqpfr itself still loads the file strictly (the config tensor is not a parameter)
    assert set(load_model(path).state_dict()) == set(model.state_dict())


def test_file_without_record_falls_back_to_the_preset_of_its_shapes(tmp_path, loader):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = create_model("iqpfr-tiny").eval()
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    descriptor = loader.load_from_file(bare)
    assert descriptor.architecture.id == "iqpfr.IQPFR"
    assert {"iqpfr-tiny", "guessed-config"} <= set(descriptor.tags)
    faces = _faces(64)
    assert (descriptor(faces) - _reference(model, faces)).abs().max().item() <= 1e-4
    # a face of another size is resized to the network's side and back
    assert descriptor(_faces(128)).shape == (1, 3, 128, 128)


def _keys(preset: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return create_model(preset).state_dict()


@pytest.mark.parametrize("preset,expected", [
    ("codeformer", "CodeFormer"),
    ("gfpgan-v1.4", "GFPGAN"),
    ("iqpfr-512", "iqpfr.IQPFR"),
    ("codeformer+q", "iqpfr.CodeFormerQ"),
    ("gfpgan-v1.4+q", "iqpfr.GFPGANQ"),
])
def test_detection_order_keeps_official_layouts_official(preset, expected):
    """The first detector (in spandrel's detection order) that claims each key layout."""
    extra = pytest.importorskip("spandrel_extra_arches", reason="needs spandrel_extra_arches")
    extra.install(ignore_duplicates=True)
    state = _keys(preset)
    first = next(a for a in spandrel.MAIN_REGISTRY.architectures("detection") if a.detect(state))
    assert str(first.architecture.id) == expected


def test_iqpir_reference_key_names_are_recognised():
    state = dict(_keys("iqpfr-512"))
    state["quantize_aesthetic.embedding.weight"] = state.pop("quantize.embedding_hq.weight")
    assert iqpfr_spandrel.is_iqpfr(state)


def test_unknown_shapes_without_record_are_refused_in_one_sentence(tmp_path, loader):
    from safetensors.torch import save_file

    model = create_model("iqpfr-tiny", dim_mlp=96)  # no preset has these shapes
    path = tmp_path / "odd.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(spandrel.UnsupportedModelError, match="iqpfr checkpoint without its config"):
        loader.load_from_file(path)


@pytest.mark.slow
def test_official_size_codeformer_still_loads_as_codeformer(tmp_path):
    """A full-size official-layout CodeFormer file goes to spandrel_extra_arches' CodeFormer."""
    extra = pytest.importorskip("spandrel_extra_arches")
    extra.install(ignore_duplicates=True)
    torch.manual_seed(0)
    path = tmp_path / "codeformer.pth"
    torch.save({"params_ema": create_model("codeformer").state_dict()}, path)
    assert spandrel.ModelLoader().load_from_file(path).architecture.id == "CodeFormer"
