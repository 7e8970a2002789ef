"""CPU time per face of the restoration presets (network forward only), and the ratio to CodeFormer-512.

    python3 benchmarks/model_cpu_time.py --threads 1 iqpfr-256 iqpfr-128 codeformer

Prints wall-clock and process CPU time (the latter is robust on a shared machine) per face and
the GFLOP count; the last line gives every preset's CPU-time ratio to the first one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from iqpfr import create_model


def measure(name: str, w: float, repeats: int) -> tuple[float, float, float]:
    """(median wall s, median CPU s, GFLOP) of one batch-1 forward."""
    model = create_model(name).eval()
    size = model.config.get("img_size", model.config.get("out_size"))
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(x, w=w)
        walls, cpus = [], []
        for _ in range(repeats):
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            model(x, w=w)
            cpus.append(time.process_time() - t_cpu)
            walls.append(time.perf_counter() - t_wall)
    return statistics.median(walls), statistics.median(cpus), counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-w", type=float, default=0.5, help="fidelity weight (0 skips the fusion blocks)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.presets:
        wall, cpu, gflop = measure(name, args.w, args.repeats)
        results[name] = cpu
        print(f"{name:>14}: {wall * 1000:8.0f} ms wall  {cpu * 1000:8.0f} ms CPU  {gflop:7.1f} GFLOP"
              f"  ({args.threads} thread(s), w={args.w})")
    base = args.presets[0]
    print("CPU-time ratio to " + base + ": " + ", ".join(f"{n} {results[n] / results[base]:.3g}" for n in results))


if __name__ == "__main__":
    main()
