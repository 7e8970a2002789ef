"""benchmarks/inference.py: the FLOP count behind its roofline, and one smoke run of the whole script."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_inference", ROOT / "benchmarks" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class ConvWithFidelity(torch.nn.Module):
    """A 3x3 convolution plus a matrix product, with the restoration models' ``(x, w=...)`` signature."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.proj = torch.nn.Linear(16, 4)

    def forward(self, x, w):
        y = self.conv(x) * w.view(-1, 1, 1, 1)
        return self.proj(y)


def test_flop_count_matches_the_hand_count():
    bench = load_benchmark()
    side = 16
    conv = 2 * 8 * 3 * 9 * side * side  # one multiply and one add per weight per output pixel
    linear = 2 * 16 * 4 * 8 * side  # (8 * 16 rows of 16) x (16 x 4)
    assert bench.gflop_per_face(ConvWithFidelity(), side, 0.5) * 1e9 == conv + linear


def test_smoke_run_writes_paths_roofline_and_headline(tmp_path, monkeypatch, capsys):
    bench = load_benchmark()
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["inference.py"])
    assert bench.main(["--models", "codeformer-tiny", "--faces", "2", "--repeats", "1", "--bf16", "off",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows, (limits,) = report["paths"], report["roofline"]
    assert rows[0]["path"] == "fp32 nchw eager b1" and rows[0]["speedup"] == 1.0
    assert all(r["psnr_db"] >= 40 for r in rows)
    assert limits["model"] == "codeformer-tiny" and limits["gflop_per_face"] > 0
    # the reference's rate is its faces/s times the work per face; the ceiling is peak over that rate
    assert abs(limits["reference_gflops"] - rows[0]["faces_per_s"] * limits["gflop_per_face"]) < 1e-6
    ceiling = limits["matmul_peak_gflops"]["fp32"] / limits["reference_gflops"]
    assert limits["fp32_ceiling_speedup"] == pytest.approx(ceiling, rel=1e-9)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("HEADLINE codeformer-tiny cpu") and "ceiling" in last
    from iqpfr.kernels import cpu_kernels_available

    if cpu_kernels_available()[0]:  # the kernel paths are timed when they build (--cpu-kernels auto)
        kernel_rows = [r for r in rows if r["cpu_kernels"]]
        assert [r["path"] for r in kernel_rows] == ["fp32 cl kernels eager b1", "fp32 cl kernels eager b2"]
        assert all(r["index_agreement"] == 1.0 for r in kernel_rows)
