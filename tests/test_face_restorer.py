"""The Python API: FaceRestorer on paths, arrays (RGB/BGR), PIL images and tensors; real batching."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from iqpfr.models.outputs import RestoreOutput
from iqpfr.restorer import FaceRestorer, ModelUnavailableError, load_restoration_model, model_input_size

pytest.importorskip("dlib")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # on a loaded 2-core CI machine one torch thread beats two contending ones by a wide margin
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

ASTRONAUT = str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg")


class EchoNet(nn.Module):
    """Stand-in restoration network: returns its input (so a restored photo equals the input),
    optionally shifted, and records every batch it sees."""

    def __init__(self, img_size: int = 64, shift: float = 0.0):
        super().__init__()
        self.img_size = img_size
        self.shift = shift
        self.anchor = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[int, tuple, tuple | None]] = []

    def forward(self, lq, w=None, quality=None):
        assert lq.min() >= -1.0 - 1e-6 and lq.max() <= 1.0 + 1e-6
        self.calls.append((lq.shape[0], tuple(w.tolist()), None if quality is None else tuple(quality.tolist())))
        return RestoreOutput(image=lq + self.shift + self.anchor)


@pytest.fixture(scope="module")
def detector():
    from iqpfr.face.detect import DlibDetector

    return DlibDetector("hog")  # loaded once for the module (the 68-point model is 100 MB)


@pytest.fixture(scope="module")
def restorer(detector) -> FaceRestorer:
    return FaceRestorer(EchoNet(), device="cpu", detector=detector)


def _psnr(a: np.ndarray, b: np.ndarray, top: float) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(top**2 / max(mse, 1e-12))


def test_echo_model_gives_back_the_photo(restorer):
    """Detect -> align -> network -> paste with an identity network reproduces the input photo."""
    original = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    result = restorer.restore(ASTRONAUT, fidelity=0.7)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.crop.shape == (64, 64, 3) and face.restored.shape == (64, 64, 3)
    assert set(face.timings) >= {"align", "model", "paste"}
    assert result.image.shape == original.shape and result.image.dtype == np.uint8
    # the pasted face went through a 64-px crop, so only fine detail differs
    assert _psnr(result.image, original, 255) > 28
    assert restorer.model.calls[-1][1] == pytest.approx((0.7,))


def test_restored_face_really_lands_in_the_photo(detector):
    restorer = FaceRestorer(EchoNet(shift=0.5), device="cpu", detector=detector)
    original = np.asarray(Image.open(ASTRONAUT).convert("RGB")).astype(np.int16)
    result = restorer.restore(ASTRONAUT, quality=0.3)
    diff = np.abs(result.image.astype(np.int16) - original).mean(axis=2)
    x0, y0, x1, y1 = result.faces[0].box.astype(int)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    assert diff[cy, cx] > 40  # brighter face
    assert diff[5, 5] == 0 and diff[-5, -5] == 0  # background untouched
    assert restorer.model.calls[-1][2] == pytest.approx((0.3,))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_arrays_come_back_in_their_dtype_channel_order_and_alpha(restorer, dtype):
    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    alpha = np.full(rgb.shape[:2], 200, np.uint8)
    rgba = np.dstack([rgb, alpha])
    if dtype == np.uint16:
        rgba = rgba.astype(np.uint16) * 257
    elif dtype == np.float32:
        rgba = rgba.astype(np.float32) / 255.0
    bgra = rgba[:, :, [2, 1, 0, 3]].copy()
    out = restorer.restore(bgra, channel_order="bgr")
    assert out.image.dtype == dtype and out.image.shape == bgra.shape
    np.testing.assert_array_equal(out.image[:, :, 3], bgra[:, :, 3])
    top = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    assert _psnr(out.image[:, :, :3], bgra[:, :, :3], top) > 28  # still BGR: close to the BGR input
    assert len(out.faces) == 1


def test_pil_gray_and_tensor_inputs(restorer):
    pil = Image.open(ASTRONAUT).convert("L")
    out = restorer.restore(pil, upscale=2)
    assert isinstance(out.image, Image.Image) and out.image.mode == "L" and out.image.size == (1024, 1024)

    tensor = torch.from_numpy(np.array(Image.open(ASTRONAUT).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    out = restorer.restore(tensor)
    assert isinstance(out.image, torch.Tensor) and out.image.shape == tensor.shape and out.image.dtype == torch.float32
    assert float((out.image - tensor).abs().mean()) < 0.02


def test_no_face_photo_is_copied_through_and_upscaled(restorer):
    noise = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    out = restorer.restore(noise)
    assert out.faces == [] and np.array_equal(out.image, noise)
    assert any("no face" in note for note in out.notes)
    big = restorer.restore(noise, upscale=2)
    assert big.image.shape == (120, 160, 3)


def test_restore_batch_sends_faces_of_several_photos_together(detector):
    net = EchoNet()
    restorer = FaceRestorer(net, device="cpu", detector=detector)
    face = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    images = [face, face[:, 40:].copy(), noise, face, face]
    results = restorer.restore_batch(images, batch_size=3, fidelity=0.2)
    assert [len(r.faces) for r in results] == [1, 1, 0, 1, 1]
    assert [b for b, _, _ in net.calls] == [3, 1]  # 4 faces from 4 photos in 2 network calls
    np.testing.assert_array_equal(results[2].image, noise)  # order kept
    # the shifted photo's face is found shifted: results belong to their own photos
    assert abs(results[1].faces[0].box[0] - (results[0].faces[0].box[0] - 40)) < 5


def test_aligned_mode_restores_the_whole_crop(restorer):
    crop = np.asarray(Image.open(ASTRONAUT).convert("RGB").crop((150, 50, 300, 200)))
    out = restorer.restore(crop, aligned=True, upscale=2)
    assert len(out.faces) == 1 and out.image.shape == (300, 300, 3)


def test_restore_aligned_model_path(restorer):
    faces = torch.rand(2, 3, 64, 64)
    out = restorer.restore_aligned(faces, fidelity=torch.tensor([0.0, 1.0]))
    assert out.shape == faces.shape and torch.allclose(out, faces, atol=1e-5)


def test_bad_inputs_raise_clear_errors(restorer, tmp_path):
    from iqpfr.io import ImageReadError

    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(ImageReadError, match="bad.jpg: not an image"):
        restorer.restore(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="fidelity"):
        restorer.restore(np.zeros((8, 8, 3), np.uint8), fidelity=2.0)
    with pytest.raises(TypeError):
        restorer.restore(12345)


def test_model_loading_errors_are_one_line(tmp_path):
    from iqpfr import restorer as module

    if not module.embedded_weights_path().is_file():
        with pytest.raises(ModelUnavailableError, match="--weights"):
            load_restoration_model()
    with pytest.raises(ModelUnavailableError, match="unknown architecture"):
        load_restoration_model("no-such-net", random_init=True)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage")
    with pytest.raises(ModelUnavailableError, match="broken.safetensors"):
        load_restoration_model("codeformer-tiny", str(broken))


def test_random_init_is_labelled_and_sized():
    net, description = load_restoration_model("codeformer-tiny", random_init=True)
    assert "RANDOM" in description and model_input_size(net) == 64


def test_self_describing_weight_file_loads_by_path(tmp_path, detector):
    from iqpfr.models.factory import create_model
    from iqpfr.weights.checkpoint import save_model

    path = save_model(create_model("codeformer-tiny"), tmp_path / "tiny.safetensors")
    restorer = FaceRestorer.from_pretrained(path, device="cpu", detector=detector)
    assert restorer.face_size == 64 and str(path) in restorer.description
    out = restorer.restore(ASTRONAUT)
    assert len(out.faces) == 1 and out.faces[0].restored.shape == (64, 64, 3)


@pytest.mark.gpu
def test_cuda_matches_cpu(detector):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from iqpfr.models.factory import create_model

    torch.manual_seed(0)
    net = create_model("codeformer-tiny").eval()
    cpu = FaceRestorer(net, device="cpu", detector=detector).restore(ASTRONAUT)
    gpu = FaceRestorer(net, device="cuda", detector=detector).restore(ASTRONAUT)
    assert _psnr(cpu.faces[0].restored, gpu.faces[0].restored, 1.0) > 40
    assert _psnr(cpu.image, gpu.image, 255) > 40



def test_fast_path_restorer_matches_the_reference_on_aligned_faces():
    # --backend onnxruntime must compute the same function as the plain network (same seed, same weights)
    torch.manual_seed(0)
    ref = FaceRestorer.from_pretrained("iqpfr-tiny", random_init=True, device="cpu")
    torch.manual_seed(0)
    fast = FaceRestorer.from_pretrained("iqpfr-tiny", random_init=True, device="cpu", backend="onnxruntime")
    assert "onnxruntime" in fast.description and fast.face_size == ref.face_size
    faces = torch.rand(2, 3, ref.face_size, ref.face_size, generator=torch.Generator().manual_seed(1))
    out_ref = ref.restore_aligned(faces, fidelity=0.5)
    out_fast = fast.restore_aligned(faces, fidelity=0.5)
    assert out_fast.shape == faces.shape
    assert (out_fast - out_ref).abs().max().item() < 1e-3
