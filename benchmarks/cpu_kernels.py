"""iqpfr's CPU kernels layer by layer, each against PyTorch in the same run.

For CodeFormer's layer shapes (batch 1, channels-last): the 3x3 convolution (``F.conv2d`` vs the
Winograd kernel, with the largest relative difference) and GroupNorm+SiLU (``F.group_norm`` +
``F.silu`` vs the fused kernel). Also what the kernels' buffer pool saves: writing a fresh 64 MiB
tensor (first touch of every page) against writing one whose memory was written before, and the
SiLU kernel's accuracy against float64, and how much of a network's convolution work the Winograd
kernel takes (counted on the meta device). Prints a table, writes JSON; the last line is the headline.

    python benchmarks/cpu_kernels.py --threads 2 --json benchmarks/results/cpu_kernels.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import iqpfr  # noqa: E402
from iqpfr.kernels import load_cpu_kernels  # noqa: E402
from iqpfr.kernels.modules import tiles_per_chunk, winograd_eligible, winograd_filter  # noqa: E402
from iqpfr.utils.fs import atomic_write_text  # noqa: E402

# (channels, side) of CodeFormer's 3x3 convolutions at 512 px, largest first
SHAPES = [(64, 512), (128, 256), (128, 128), (256, 64), (256, 32), (512, 16)]


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocator, pool, oneDNN primitive cache)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def layer_row(kernels, channels: int, side: int, g: torch.Generator, repeats: int) -> dict:
    """One layer shape: conv2d vs Winograd and torch GroupNorm+SiLU vs the fused kernel."""
    x = torch.randn(1, channels, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(channels, channels, 3, 3, generator=g) / (3 * channels**0.5)).contiguous(
        memory_format=torch.channels_last
    )
    bias, gamma, beta = (torch.randn(channels, generator=g) for _ in range(3))
    filt, x_nhwc = winograd_filter(weight), x.permute(0, 2, 3, 1)
    chunk = tiles_per_chunk(channels, channels, (side // 4) ** 2, torch.get_num_threads())
    with torch.inference_mode():
        ref = F.conv2d(x, weight, bias, padding=1)
        out = kernels.winograd_conv3x3(x_nhwc, filt, bias, None, chunk).permute(0, 3, 1, 2)
        rel = float((out - ref).abs().max() / ref.abs().max())
        conv_ms = best_ms(lambda: F.conv2d(x, weight, bias, padding=1), repeats)
        wino_ms = best_ms(lambda: kernels.winograd_conv3x3(x_nhwc, filt, bias, None, chunk), repeats)
        norm_ms = best_ms(lambda: F.silu(F.group_norm(x, 32, gamma, beta, 1e-6)), repeats)
        fused_ms = best_ms(lambda: kernels.group_norm(x_nhwc, 32, gamma, beta, 1e-6, True), repeats)
    return {
        "channels": channels, "side": side, "conv2d_ms": conv_ms, "winograd_ms": wino_ms,
        "conv_speedup": conv_ms / wino_ms, "winograd_max_rel_diff": rel,
        "torch_gn_silu_ms": norm_ms, "kernel_gn_silu_ms": fused_ms, "gn_silu_speedup": norm_ms / fused_ms,
    }


def first_touch_cost(repeats: int, mib: int = 64) -> dict:
    """ms to write ``mib`` MiB into a fresh tensor vs into memory that was written before."""
    n = mib * (1 << 20) // 4
    reused = torch.empty(n)
    fresh_ms = best_ms(lambda: torch.empty(n).fill_(1.0), repeats)
    reused_ms = best_ms(lambda: reused.fill_(1.0), repeats)
    return {"mib": mib, "fresh_ms": fresh_ms, "reused_ms": reused_ms, "page_fault_ms": fresh_ms - reused_ms}


def silu_accuracy(kernels) -> float:
    x = torch.linspace(-80, 80, 200_000)
    ref = F.silu(x.double())
    out = kernels.silu(x).double()
    keep = ref.abs() > 1e-30
    return float(((out - ref).abs()[keep] / ref.abs()[keep]).max())


def eligible_share(name: str) -> dict:
    """Convolutions of preset ``name`` (one face, w = 0.5) the Winograd kernel takes, and their GFLOP.

    Counted from each ``nn.Conv2d``'s output shape in a forward on the meta device (nothing computed);
    multiply and add counted apart, as ``benchmarks/inference.py`` counts.
    """
    model = iqpfr.create_model(name).eval().to("meta")
    size = int(model.config.get("img_size") or model.config.get("out_size"))
    totals = {"eligible": 0.0, "other": 0.0, "eligible_layers": 0}

    def count(conv, _inputs, out):
        flops = 2 * out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        key = "eligible" if winograd_eligible(conv) else "other"
        totals[key] += flops / 1e9
        totals["eligible_layers"] += key == "eligible"

    for conv in model.modules():
        if isinstance(conv, torch.nn.Conv2d):
            conv.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size, device="meta"), w=torch.full((1,), 0.5, device="meta"))
    return {"model": name, **totals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (best)")
    parser.add_argument("--model", default="codeformer", help="preset whose eligible convolutions are counted")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_kernels.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels = load_cpu_kernels()
    g = torch.Generator().manual_seed(0)
    rows = [layer_row(kernels, channels, side, g, args.repeats) for channels, side in SHAPES]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"{'layer':<12} {'conv2d ms':>10} {'winograd':>9} {'ratio':>6} {'max rel':>8} "
          f"{'GN+SiLU ms':>11} {'kernel':>7} {'ratio':>6}")
    for r in rows:
        print(f"{r['channels']:>4}@{r['side']:<7} {r['conv2d_ms']:>10.1f} {r['winograd_ms']:>9.1f} "
              f"{r['conv_speedup']:>5.2f}x {r['winograd_max_rel_diff']:>8.1e} {r['torch_gn_silu_ms']:>11.1f} "
              f"{r['kernel_gn_silu_ms']:>7.1f} {r['gn_silu_speedup']:>5.2f}x")
    touch = first_touch_cost(args.repeats)
    print(f"writing {touch['mib']} MiB: fresh tensor {touch['fresh_ms']:.1f} ms, memory written before "
          f"{touch['reused_ms']:.1f} ms: {touch['page_fault_ms']:.1f} ms of first-touch page faults, "
          "which the kernels' buffer pool avoids")
    share = eligible_share(args.model)
    print(f"{args.model}: {share['eligible_layers']} Winograd-eligible convolutions, {share['eligible']:.0f} "
          f"of its {share['eligible'] + share['other']:.0f} GFLOP of nn.Conv2d work per face")
    silu_error = silu_accuracy(kernels)
    print(f"SiLU kernel: largest relative difference from float64 over [-80, 80]: {silu_error:.1e}")
    report = {"threads": torch.get_num_threads(), "repeats": args.repeats, "layers": rows,
              "first_touch": touch, "eligible": share, "silu_max_rel_error": silu_error}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(report, indent=2))
    top = rows[0]
    print(f"HEADLINE {top['channels']}@{top['side']}: Winograd {top['conv_speedup']:.2f}x conv2d, fused "
          f"GroupNorm+SiLU {top['gn_silu_speedup']:.2f}x torch; wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
