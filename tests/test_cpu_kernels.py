"""iqpfr.kernels: the Winograd convolution, GroupNorm(+SiLU) and SiLU kernels against PyTorch, and
their use inside a network (``use_cpu_kernels``, ``prepare_for_inference(cpu_kernels=True)``)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import iqpfr
from iqpfr import kernels as kernels_pkg
from iqpfr.inference import prepare_for_inference, to_channels_last
from iqpfr.kernels import KernelsUnavailable, load_cpu_kernels
from iqpfr.kernels.modules import tiles_per_chunk, use_cpu_kernels, winograd_eligible, winograd_filter


@pytest.fixture(scope="session")
def kernels(tmp_path_factory):
    """The built kernels (built once per test session, into a temporary cache), or a skip saying why."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IQPFR_HOME", str(tmp_path_factory.mktemp("kernels_home")))
        try:
            return load_cpu_kernels()
        except KernelsUnavailable as err:
            pytest.skip(f"CPU kernels unavailable here: {err}")


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    "n, c, k, h, w",
    [(2, 16, 24, 13, 9), (1, 64, 64, 32, 32), (3, 8, 8, 1, 1), (1, 32, 16, 4, 7)],
)
def test_winograd_matches_conv2d(kernels, n, c, k, h, w):
    g = torch.Generator().manual_seed(n * 1000 + c + h)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(k, c, 3, 3, generator=g) / (3 * c**0.5)
    bias = torch.randn(k, generator=g)
    residual = torch.randn(n, k, h, w, generator=g)
    ref = F.conv2d(x, weight, bias, padding=1)
    filt = winograd_filter(weight)
    for chunk in (1, 5, 10_000):  # one tile per chunk, a ragged last chunk, everything in one chunk
        out = kernels.winograd_conv3x3(nhwc(x), filt, bias, None, chunk).permute(0, 3, 1, 2)
        assert relative_error(out, ref) < 2e-5, chunk
    no_bias = kernels.winograd_conv3x3(nhwc(x), filt, None, None, 7).permute(0, 3, 1, 2)
    assert relative_error(no_bias, F.conv2d(x, weight, None, padding=1)) < 2e-5
    with_skip = kernels.winograd_conv3x3(nhwc(x), filt, bias, nhwc(residual), 7).permute(0, 3, 1, 2)
    assert relative_error(with_skip, ref + residual) < 2e-5


def test_winograd_of_an_empty_batch(kernels):
    out = kernels.winograd_conv3x3(torch.zeros(0, 5, 5, 8), torch.zeros(36, 8, 16), None, None, 4)
    assert out.shape == (0, 5, 5, 16)


def test_winograd_rejects_what_it_cannot_do(kernels):
    x = torch.randn(1, 4, 4, 12)  # 12 channels: not a multiple of 8
    with pytest.raises(RuntimeError, match="multiple of 8"):
        kernels.winograd_conv3x3(x, torch.zeros(36, 12, 8), None, None, 4)
    x = torch.randn(1, 4, 4, 8)
    with pytest.raises(RuntimeError, match=r"\(36, C, K\)"):
        kernels.winograd_conv3x3(x, torch.zeros(36, 16, 8), None, None, 4)
    with pytest.raises(RuntimeError, match="residual"):
        kernels.winograd_conv3x3(x, torch.zeros(36, 8, 8), None, torch.zeros(1, 4, 5, 8), 4)
    with pytest.raises(RuntimeError, match="contiguous"):
        kernels.winograd_conv3x3(x.transpose(1, 2), torch.zeros(36, 8, 8), None, None, 4)


@pytest.mark.parametrize("silu", [False, True])
def test_group_norm_matches_torch(kernels, silu):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 64, 7, 5, generator=g) * 3 + 1.5  # an offset mean tests the variance formula
    gamma, beta = torch.randn(64, generator=g), torch.randn(64, generator=g)
    ref = F.group_norm(x, 32, gamma, beta, eps=1e-6)
    ref = F.silu(ref) if silu else ref
    out = kernels.group_norm(nhwc(x), 32, gamma, beta, 1e-6, silu).permute(0, 3, 1, 2)
    assert float((out - ref).abs().max()) < 2e-5


def test_silu_matches_torch_over_the_whole_range(kernels):
    x = torch.cat([torch.linspace(-120, 120, 9600), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 88.5, -87.5] + [1.0, 2.0])])
    out, ref = kernels.silu(x), F.silu(x)
    assert torch.isfinite(out).all()
    assert float(((out - ref).abs() / (1 + ref.abs())).max()) < 1e-6


def test_parallel_for_uses_the_threads(kernels):
    # a build without OpenMP would run every kernel on one thread
    assert kernels.parallel_threads() == min(torch.get_num_threads(), 1024)


def test_chunk_size_keeps_threads_busy_and_cache_sized():
    assert tiles_per_chunk(64, 64, tiles=10_000, threads=2) == (4 << 20) // (36 * 4 * 128)
    assert tiles_per_chunk(64, 64, tiles=10, threads=2) == 5  # small layer: split across threads
    assert tiles_per_chunk(2048, 2048, tiles=10_000, threads=2) == 16  # never below 16 tiles
    assert tiles_per_chunk(8, 8, tiles=1, threads=4) == 1


def test_eligibility():
    assert winograd_eligible(torch.nn.Conv2d(8, 16, 3, padding=1))
    assert not winograd_eligible(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1))
    assert not winograd_eligible(torch.nn.Conv2d(8, 16, 1))
    assert not winograd_eligible(torch.nn.Conv2d(3, 16, 3, padding=1))  # 3 input channels
    assert not winograd_eligible(torch.nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect"))
    assert not winograd_eligible(torch.nn.Conv2d(8, 16, 3, padding=2, dilation=2))


@pytest.fixture
def tiny_codeformer():
    torch.manual_seed(0)
    model = iqpfr.create_model("codeformer-tiny").eval()
    lq = torch.rand(2, 3, model.config["img_size"], model.config["img_size"]) * 2 - 1
    return model, lq


def test_network_with_kernels_computes_the_same_function(kernels, tiny_codeformer):
    model, lq = tiny_codeformer
    fast = copy.deepcopy(model)
    to_channels_last(fast)
    keys = {k: v.clone() for k, v in fast.state_dict().items()}
    changed = use_cpu_kernels(fast, kernels)
    assert changed > 0
    assert use_cpu_kernels(fast, kernels) == 0  # already done
    assert fast.state_dict().keys() == keys.keys()  # filters are non-persistent buffers
    assert all(torch.equal(fast.state_dict()[k], v) for k, v in keys.items())
    w = torch.tensor([0.0, 0.7])
    with torch.inference_mode():
        ref = model(lq, w=w)
        out = fast(lq.contiguous(memory_format=torch.channels_last), w=w)
    assert torch.equal(out.indices, ref.indices)
    assert float((out.image - ref.image).abs().max()) < 1e-4


def test_kernels_step_aside_for_autograd_and_autocast(kernels):
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    fast = copy.deepcopy(conv)
    use_cpu_kernels(fast, kernels)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    out = fast(x)  # recording autograd: the original convolution runs, so gradients flow
    out.sum().backward()
    assert x.grad is not None and torch.equal(out, conv(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x.detach()).dtype == torch.bfloat16  # autocast: the original runs too
    with torch.no_grad():
        assert not torch.equal(fast(x), conv(x))  # the kernel ran (Winograd rounding differs)
        assert relative_error(fast(x), conv(x)) < 2e-5


def test_prepare_for_inference_with_cpu_kernels(kernels, tiny_codeformer):
    model, lq = tiny_codeformer
    runner = prepare_for_inference(copy.deepcopy(model), device="cpu", cpu_kernels=True, batch_size=1)
    assert runner.settings.cpu_kernels and runner.settings.channels_last and runner.settings.precision == "fp32"
    assert "cpu_kernels" in runner.settings.label()
    with torch.inference_mode():
        ref = model(lq, w=0.5)
    out = runner(lq, w=0.5)
    assert torch.equal(out.indices, ref.indices)
    assert float((out.image - ref.image).abs().max()) < 1e-4


@pytest.mark.parametrize("kwargs", [{"precision": "bf16"}, {"compile": True}])
def test_cpu_kernels_refuse_other_paths(kwargs, tiny_codeformer):
    model, _ = tiny_codeformer
    with pytest.raises(ValueError, match="cpu_kernels"):
        prepare_for_inference(model, device="cpu", cpu_kernels=True, **kwargs)


def test_missing_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels_pkg.shutil, "which", lambda name: None)
    with pytest.raises(KernelsUnavailable, match="C\\+\\+ compiler"):
        kernels_pkg.build_and_import()


def test_build_directory_depends_on_the_source(monkeypatch, tmp_path):
    first = kernels_pkg.build_directory()
    changed = tmp_path / "cpu_kernels.cpp"
    changed.write_text(kernels_pkg.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(kernels_pkg, "SOURCE", changed)
    assert kernels_pkg.build_directory() != first
    assert kernels_pkg.build_directory().parent == first.parent


def test_restore_cli_with_cpu_kernels(kernels, tmp_path, capsys):
    import importlib.resources
    import json
    from pathlib import Path

    from PIL import Image

    from iqpfr.cli import main

    astronaut = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
    crop = tmp_path / "face.png"
    Image.open(astronaut).crop((150, 40, 310, 200)).save(crop)
    outputs = {}
    for flag in ([], ["--cpu-kernels"]):
        out = tmp_path / ("kernels" if flag else "plain")
        code = main(["restore", str(crop), "-o", str(out), "--model", "codeformer-tiny", "--random-init",
                     "--device", "cpu", "--has_aligned", "--json", str(out / "report.json"), *flag])
        err = capsys.readouterr().err
        assert code == 0, err
        outputs[bool(flag)] = Image.open(out / "restored_faces" / "face_00.png")
    assert "cpu_kernels" in err  # the model line names the path
    assert json.loads((tmp_path / "kernels" / "report.json").read_text())["settings"]["cpu_kernels"] is True
    import numpy as np

    diff = np.abs(np.asarray(outputs[True], np.int16) - np.asarray(outputs[False], np.int16))
    assert diff.max() <= 1  # the same image up to 8-bit rounding


def test_output_buffers_are_reused_only_after_release(kernels):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 8, 8, 16, generator=g)
    filt = winograd_filter(torch.randn(16, 16, 3, 3, generator=g))
    kernels.pool_release()
    first = kernels.winograd_conv3x3(x, filt, None, None, 4)
    second = kernels.winograd_conv3x3(x, filt, None, None, 4)  # `first` is alive: a different buffer
    assert first.data_ptr() != second.data_ptr() and torch.equal(first, second)
    pointer, expected = first.data_ptr(), first.clone()
    del first
    assert kernels.pool_idle_bytes() >= expected.numel() * 4  # handed back to the pool
    third = kernels.winograd_conv3x3(x * 2, filt, None, None, 4)
    assert third.data_ptr() == pointer  # the released buffer serves the next output of that size
    assert torch.allclose(third, 2 * expected, rtol=1e-5, atol=1e-5) and torch.equal(second, expected)
    del second, third
    kernels.pool_release()
    assert kernels.pool_idle_bytes() == 0


def test_modulated_winograd_matches_scaled_conv2d(kernels):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 16, 9, 11, generator=g)
    weight = torch.randn(24, 16, 3, 3, generator=g) / 12
    scale, demodulation = torch.rand(2, 16, generator=g) + 0.5, torch.rand(2, 24, generator=g) + 0.5
    ref = F.conv2d(x * scale[:, :, None, None], weight, padding=1)
    filt = winograd_filter(weight)
    out = kernels.winograd_conv3x3_modulated(nhwc(x), filt, scale, demodulation, 5).permute(0, 3, 1, 2)
    assert relative_error(out, ref * demodulation[:, :, None, None]) < 2e-5
    plain = kernels.winograd_conv3x3_modulated(nhwc(x), filt, scale, None, 5).permute(0, 3, 1, 2)
    assert relative_error(plain, ref) < 2e-5
    with pytest.raises(RuntimeError, match="input_scale"):
        kernels.winograd_conv3x3_modulated(nhwc(x), filt, scale[:1], None, 5)


def test_gfpgan_with_kernels_computes_the_same_function(kernels):
    from iqpfr.models.stylegan2 import ModulatedConv2d

    torch.manual_seed(0)
    model = iqpfr.create_model("gfpgan-tiny").eval()
    size = model.config["out_size"]
    lq = torch.rand(2, 3, size, size) * 2 - 1
    fast = copy.deepcopy(model)
    to_channels_last(fast)
    use_cpu_kernels(fast, kernels)
    modulated = [m for m in fast.modules() if isinstance(m, ModulatedConv2d)]
    assert any(getattr(m, "_iqpfr_cpu_kernels", False) for m in modulated)  # the 3x3 style convolutions
    assert not all(getattr(m, "_iqpfr_cpu_kernels", False) for m in modulated)  # not the 1x1 ToRGB ones
    with torch.inference_mode():
        ref = model(lq).image
        out = fast(lq.contiguous(memory_format=torch.channels_last)).image
    assert float((out - ref).abs().max()) < 1e-4


def test_kernel_benchmark_functions(kernels):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cpu_kernels.py"
    spec = importlib.util.spec_from_file_location("benchmark_cpu_kernels", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    row = bench.layer_row(kernels, 32, 16, torch.Generator().manual_seed(0), repeats=1)
    assert row["winograd_max_rel_diff"] < 2e-5 and row["conv_speedup"] > 0 and row["gn_silu_speedup"] > 0
    touch = bench.first_touch_cost(repeats=1, mib=1)
    assert touch["fresh_ms"] > 0 and touch["reused_ms"] > 0
    assert bench.silu_accuracy(kernels) < 1e-6
    share = bench.eligible_share("codeformer-tiny")  # the same rule use_cpu_kernels applies
    model = copy.deepcopy(iqpfr.create_model("codeformer-tiny"))
    use_cpu_kernels(model, kernels)
    patched = sum(isinstance(m, torch.nn.Conv2d) and getattr(m, "_iqpfr_cpu_kernels", False) for m in model.modules())
    assert share["eligible_layers"] == patched and 0 < share["eligible"] and 0 < share["other"]
