"""Every fast inference path computes the fp32 eager function within its tolerance (tiny presets).

Weights follow the conformance formula (realistic activation ranges, unlike a fresh random init whose
near-identical codebook rows make every rounding flip a code).
"""

from __future__ import annotations

import copy

import pytest
import torch

import iqpfr
from conformance_weights import synthetic_tensor
from iqpfr.inference import PRECISIONS, prepare_for_inference, resolve_precision

PRESETS = ("codeformer-tiny", "gfpgan-tiny", "iqpfr-tiny")
FP32_MAX_ABS = 1e-4
BF16_MIN_PSNR = 40.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (clamped, as they are displayed)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean()
    return float(10 * torch.log10(1 / mse))


@pytest.fixture(scope="module", params=PRESETS)
def reference(request):
    model = iqpfr.create_model(request.param).eval()
    state = {k: torch.from_numpy(synthetic_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    gen = torch.Generator().manual_seed(0)
    lq = torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1
    w = torch.tensor([0.0, 0.6, 1.0])
    quality = torch.tensor([0.9, 0.5, 0.2])
    with torch.no_grad():  # the reference: fp32, eager, NCHW, one face at a time
        singles = [model(lq[i : i + 1], w=w[i : i + 1], quality=quality[i : i + 1]) for i in range(3)]
    image = torch.cat([s.image for s in singles])
    indices = None if singles[0].indices is None else torch.cat([s.indices for s in singles])
    return request.param, model, (lq, w, quality), image, indices


def _run(model, inputs, **settings):
    # batch 2 over 3 faces: one full chunk and one partial chunk, per-sample w/quality sliced along
    runner = prepare_for_inference(copy.deepcopy(model), device="cpu", batch_size=2, **settings)
    lq, w, quality = inputs
    return runner(lq, w=w, quality=quality)


def test_fp32_batched_channels_last_matches_eager(reference):
    _, model, inputs, image, indices = reference
    out = _run(model, inputs, precision="fp32", channels_last=True)
    assert out.image.shape == image.shape and out.image.dtype == torch.float32
    assert out.image.is_contiguous()
    assert (out.image - image).abs().max().item() <= FP32_MAX_ABS
    if indices is not None:
        assert torch.equal(out.indices, indices)


def test_bf16_keeps_codes_and_psnr(reference):
    _, model, inputs, image, indices = reference
    out = _run(model, inputs, precision="bf16", channels_last=True)
    assert out.image.dtype == torch.float32
    if indices is not None:  # the code-choosing parts stay fp32, so codes match exactly
        assert torch.equal(out.indices, indices)
    assert psnr(out.image, image) >= BF16_MIN_PSNR
    assert (out.image - image).abs().max().item() > 0  # it really ran in bf16


def test_bf16_full_is_close(reference):
    name, model, inputs, image, indices = reference
    out = _run(model, inputs, precision="bf16-full", channels_last=True)
    assert torch.isfinite(out.image).all()
    if indices is None:  # no codes: bf16-full is bf16
        assert psnr(out.image, image) >= BF16_MIN_PSNR
    else:  # no exactness promise, but nearly all codes agree
        assert (out.indices == indices).float().mean().item() >= 0.9


def test_runner_batches_float_w_and_is_a_network(reference):
    _, model, (lq, _, _), _, _ = reference
    runner = prepare_for_inference(
        copy.deepcopy(model), device="cpu", precision="fp32", channels_last=False, batch_size=2
    )
    with torch.no_grad():
        expected = model(lq, w=0.25).image
    out = runner(lq, w=0.25)
    assert out.image.shape[0] == 3
    assert (out.image - expected).abs().max().item() <= FP32_MAX_ABS
    assert runner.config == model.config  # FaceRestorer reads the face size from here
    assert not any(p.requires_grad for p in runner.parameters())


def test_precision_validation():
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in PRECISIONS
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", torch.device("cpu"))
    model = iqpfr.create_model("gfpgan-tiny")
    with pytest.raises(ValueError, match="cuda_graphs"):
        prepare_for_inference(model, device="cpu", cuda_graphs=True, compile=True)
    with pytest.raises(ValueError, match="batch_size"):
        prepare_for_inference(model, device="cpu", batch_size=0)


@pytest.mark.slow  # Inductor compiles C++ kernels: minutes on 2 cores
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_path_matches_eager(reference, precision):
    _, model, inputs, image, indices = reference
    out = _run(model, inputs, precision=precision, compile=True)
    out_again = _run(model, inputs, precision=precision, compile=True)  # padded last chunk, cached graph
    if precision == "fp32":
        assert (out.image - image).abs().max().item() <= FP32_MAX_ABS
    else:
        assert psnr(out.image, image) >= BF16_MIN_PSNR
    if indices is not None:
        assert torch.equal(out.indices, indices)
    assert torch.equal(out.image, out_again.image)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_path(reference):
    _, model, inputs, image, indices = reference
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runner = prepare_for_inference(copy.deepcopy(model), device="cuda", precision="bf16", batch_size=3)
    lq, w, quality = inputs
    out = runner(lq, w=w, quality=quality)
    assert psnr(out.image.cpu(), image) >= BF16_MIN_PSNR
    if indices is not None:
        assert torch.equal(out.indices.cpu(), indices)
