"""Full-size ONNX export check: export each preset (conformance-formula weights) and compare onnxruntime
with PyTorch at batch 1 and 2 (per-sample w / quality); writes JSON.

    python benchmarks/onnx_export.py --models gfpgan-v1.4 codeformer --out-dir /tmp/onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # conformance_weights

import iqpfr  # noqa: E402
from iqpfr.export import export_onnx  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["gfpgan-v1.4", "codeformer"])
    parser.add_argument("--out-dir", type=Path, required=True, help="where the .onnx files go (overwritten)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "onnx_export.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from conformance_weights import synthetic_tensor

    results = {}
    for name in args.models:
        model = iqpfr.create_model(name).eval()
        model.load_state_dict(
            {k: torch.from_numpy(synthetic_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}
        )
        start = time.perf_counter()
        report = export_onnx(
            model, args.out_dir / f"{name}.onnx", opset=args.opset, batch=1, check=True, overwrite=True
        )
        results[name] = {**report.to_dict(), "total_s": time.perf_counter() - start}
        print(
            f"{name}: {report.size_bytes / 1e6:.0f} MB, export {report.export_seconds:.0f} s, onnxruntime vs "
            f"PyTorch max |diff| {report.max_abs_diff:.2e} at batches {list(report.checked_batches)}: "
            f"{'OK' if report.passed else 'FAILED'}",
            flush=True,
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["passed"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
