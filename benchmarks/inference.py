"""Inference speed and exactness of every fast path against fp32 eager batch-1, in one run.

For each model and device: faces/s of each path (``iqpfr.inference.prepare_for_inference`` settings),
its speed-up over the fp32 eager NCHW batch-1 reference on the same weights and inputs, and its output
difference from that reference (max |diff| of the raw output, PSNR of the displayed image, share of
equal code indices). Optionally the whole-photo pipeline (detection + alignment + network + paste,
``iqpfr.FaceRestorer``) on a folder of photos. Per model and device also a roofline: the GFLOP of one
face, the GFLOP/s of each path, the device's fp32 (and bf16) matrix-product peak measured in the same
run, and the largest speed-up an fp32 path at that peak could reach. Prints a table whose last line
is the headline ratio and writes everything to JSON.

    python benchmarks/inference.py                                  # CodeFormer + GFPGAN, CPU (+ CUDA)
    python benchmarks/inference.py --models codeformer-tiny --faces 4 --repeats 1   # smoke test
    python benchmarks/inference.py --compile --whole-photos ../shared/data/codeformer_whole_imgs

Weights: by default the conformance formula (``tests/conformance_weights.py``: deterministic weights
with realistic activation ranges; no download). Trained weights have different activations, so the
bf16 differences measured here are indicative, not a guarantee (fp32 paths are exact either way).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # conformance_weights

import iqpfr  # noqa: E402
from iqpfr.inference import cpu_has_fast_bf16, prepare_for_inference  # noqa: E402

PSNR_GOAL_DB = 40.0
DEFAULT_FACES = ROOT.parent / "shared" / "data" / "codeformer_cropped_faces"


@dataclass(frozen=True)
class PathSpec:
    """One inference path: ``prepare_for_inference`` settings."""

    precision: str
    channels_last: bool
    batch: int
    compile: bool = False
    cuda_graphs: bool = False
    backend: str = "torch"
    workers: int = 1
    cpu_kernels: bool = False

    @property
    def label(self) -> str:
        if self.backend == "onnxruntime":
            return f"onnxruntime {self.precision} b{self.batch}" + (f" x{self.workers}" if self.workers > 1 else "")
        parts = [self.precision, "cl" if self.channels_last else "nchw"]
        if self.cpu_kernels:
            parts.append("kernels")
        parts.append("compiled" if self.compile else "eager")
        if self.cuda_graphs:
            parts.append("graphs")
        return f"{' '.join(parts)} b{self.batch}"


REFERENCE = PathSpec("fp32", channels_last=False, batch=1)


def default_paths(
    device: str, batch: int, with_compile: bool, with_bf16: bool, with_kernels: bool = False
) -> list[PathSpec]:
    paths = [REFERENCE, PathSpec("fp32", True, 1), PathSpec("fp32", True, batch)]
    if with_kernels and device == "cpu":  # iqpfr.kernels: Winograd convolutions, fused GroupNorm+SiLU
        paths += [PathSpec("fp32", True, b, cpu_kernels=True) for b in sorted({1, batch})]
    if with_bf16:
        paths += [PathSpec("bf16", True, batch), PathSpec("bf16-full", True, batch)]
    if device == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        paths += [PathSpec("fp32", False, b, backend="onnxruntime") for b in sorted({1, batch})]
        if torch.get_num_threads() > 1:  # faces in parallel, one thread each
            workers = torch.get_num_threads()
            paths.append(PathSpec("fp32", False, 1, backend="onnxruntime", workers=workers))
    if with_compile:
        paths += [PathSpec("fp32", True, batch, compile=True)]
        if with_bf16:
            paths += [PathSpec("bf16", True, batch, compile=True)]
        if device == "cuda":
            paths += [PathSpec("bf16", True, batch, compile=True, cuda_graphs=True)]
    return paths


# ------------------------------------------------------------------------------------------ inputs


def conformance_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from conformance_weights import synthetic_tensor

    return {k: torch.from_numpy(synthetic_tensor(k, tuple(v.shape))) for k, v in model.state_dict().items()}


def build_model(name: str, weights: str) -> torch.nn.Module:
    if weights == "random":
        torch.manual_seed(0)
        return iqpfr.create_model(name).eval()
    if weights == "conformance":
        model = iqpfr.create_model(name).eval()
        model.load_state_dict(conformance_weights(model), strict=True)
        return model
    return iqpfr.load_model(weights).eval()


def load_faces(folder: Path | None, count: int, size: int) -> tuple[torch.Tensor, str]:
    """(count, 3, size, size) in [-1, 1]: aligned face photos from ``folder`` (cycled), or noise."""
    files = (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"}) if folder else []
    )
    if not files:
        gen = torch.Generator().manual_seed(0)
        return torch.rand(count, 3, size, size, generator=gen) * 2 - 1, "uniform noise"
    from PIL import Image

    faces = []
    for i in range(count):
        img = Image.open(files[i % len(files)]).convert("RGB").resize((size, size), Image.BICUBIC)
        faces.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
    return torch.stack(faces), f"{min(count, len(files))} photos from {folder}"


# ------------------------------------------------------------------------------------------ roofline


def gflop_per_face(model: torch.nn.Module, size: int, w: float) -> float:
    """Floating-point operations (multiply and add counted apart) of one face through ``model``, in GFLOP.

    Counted by ``torch.utils.flop_counter`` on a batch-1 fp32 forward: convolutions, matrix products and
    attention, i.e. the work a faster kernel cannot avoid; element-wise operations are left out.
    """
    from torch.utils.flop_counter import FlopCounterMode

    # on the meta device nothing is computed or stored, and autograd stays on for the counter's
    # module hooks (which fail under no_grad / inference_mode)
    meta_model = copy.deepcopy(model).to("meta")
    counter = FlopCounterMode(display=False)
    with counter:
        meta_model(torch.zeros(1, 3, size, size, device="meta"), w=torch.full((1,), w, device="meta"))
    return counter.get_total_flops() / 1e9


def matmul_peak_gflops(device: str, dtype: torch.dtype, repeats: int = 10) -> float:
    """Best GFLOP/s of a large square matrix product: the practical peak of ``device`` in ``dtype``."""
    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms the kernel up
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def roofline(name: str, gflop: float, device: str, reference_fps: float, with_bf16: bool) -> dict:
    """What the hardware allows for a model of ``gflop`` per face (``gflop_per_face``): matmul peaks and
    the best possible speed-up in fp32.

    A path at the fp32 peak runs ``peak / GFLOP-per-face`` faces/s; dividing by the reference gives
    the largest speed-up any exact fp32 kernel doing the counted arithmetic could reach on this device.
    Only lower precision (bf16 on hardware that has it) or less work can go beyond it: the
    ``cpu_kernels`` paths do less (Winograd convolutions), so their GFLOP/s column, counted with the
    direct-convolution FLOPs, can exceed the peak.
    """
    peaks = {"fp32": matmul_peak_gflops(device, torch.float32)}
    if with_bf16:
        peaks["bf16"] = matmul_peak_gflops(device, torch.bfloat16)
    return {
        "model": name,
        "device": device,
        "gflop_per_face": gflop,
        "matmul_peak_gflops": peaks,
        "reference_gflops": reference_fps * gflop,
        "fp32_ceiling_faces_per_s": peaks["fp32"] / gflop,
        "fp32_ceiling_speedup": peaks["fp32"] / gflop / reference_fps,
    }


def format_roofline(r: dict) -> str:
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in r["matmul_peak_gflops"].items())
    return (
        f"roofline {r['model']} {r['device']}: {r['gflop_per_face']:.1f} GFLOP/face; matmul peak (GFLOP/s) {peaks}; "
        f"reference runs at {r['reference_gflops']:.1f} GFLOP/s; an fp32 path at peak would give "
        f"{r['fp32_ceiling_faces_per_s']:.3f} faces/s = {r['fp32_ceiling_speedup']:.2f}x the reference"
    )


# ------------------------------------------------------------------------------------------ metrics


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of images in [-1, 1], clamped as displayed (peak = full range)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).double().pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_path(model, spec: PathSpec, device: str, lq, w):
    """(run, merge, warm-up seconds) for one path: ``merge(run())`` gives image and indices."""
    if spec == REFERENCE:
        model = model.to(device)

        def run():
            outs = []
            with torch.inference_mode():
                for i in range(lq.shape[0]):
                    outs.append(model(lq[i : i + 1].to(device), w=w[i : i + 1].to(device)))
            return outs

        def merge(outs):
            return {
                "image": torch.cat([o.image for o in outs]).float().cpu(),
                "indices": None if outs[0].indices is None else torch.cat([o.indices for o in outs]).cpu(),
            }
    else:
        runner = prepare_for_inference(
            copy.deepcopy(model),
            device=device,
            precision=spec.precision,
            channels_last=spec.channels_last,
            compile=spec.compile,
            cuda_graphs=spec.cuda_graphs,
            batch_size=spec.batch,
            backend=spec.backend,
            workers=spec.workers,
            cpu_kernels=spec.cpu_kernels,
        )

        def run():
            return runner(lq, w=w)

        def merge(out):
            return {"image": out.image.cpu(), "indices": None if out.indices is None else out.indices.cpu()}

    start = time.perf_counter()
    if spec == REFERENCE:  # warm up on one face (allocator, oneDNN primitive cache)
        with torch.inference_mode():
            model(lq[:1].to(device), w=w[:1].to(device))
    else:  # warm up on a full batch (compilation happens here)
        runner(lq[: spec.batch], w=w[: spec.batch])
    sync(device)
    return run, merge, time.perf_counter() - start


def time_once(run, merge, device: str):
    """(merged result, seconds) of one timed call."""
    sync(device)
    start = time.perf_counter()
    out = run()
    sync(device)
    return merge(out), time.perf_counter() - start


def bench_model(name: str, device: str, args, paths: list[PathSpec]) -> tuple[list[dict], dict]:
    """Rows of every path (first row: the reference) and the device's roofline for this model."""
    model = build_model(name, args.weights)
    size = int(model.config.get("img_size") or model.config.get("out_size"))
    lq, source = load_faces(args.faces_dir, args.faces, size)
    gflop = gflop_per_face(model, size, args.w)
    w = torch.full((args.faces,), args.w)
    paths = [
        p
        for p in paths
        if not (p.precision.startswith("bf16") and device == "cuda" and not torch.cuda.is_bf16_supported())
    ]
    prepared = [make_path(model, spec, device, lq, w) for spec in paths]
    # round-robin repeats: every path is timed in each round, so a change of machine load during the
    # run affects all paths alike instead of favouring the ones that happen to run later
    times: list[list[float]] = [[] for _ in paths]
    results: list[dict] = [{} for _ in paths]
    for _ in range(args.repeats):
        for i, (run, merge, _) in enumerate(prepared):
            results[i], seconds = time_once(run, merge, device)
            times[i].append(seconds)
    rows = []
    ref_result, ref_seconds = results[0], statistics.median(times[0])
    for spec, (_, _, warmup), result, spec_times in zip(paths, prepared, results, times):
        seconds = statistics.median(spec_times)
        diff = (result["image"] - ref_result["image"]).abs()
        idx = None
        if result["indices"] is not None:
            idx = float((result["indices"] == ref_result["indices"]).float().mean())
        row = {
            "model": name,
            "device": device,
            "path": spec.label,
            "batch": spec.batch,
            "precision": spec.precision,
            "channels_last": spec.channels_last,
            "compile": spec.compile,
            "cuda_graphs": spec.cuda_graphs,
            "backend": spec.backend,
            "workers": spec.workers,
            "cpu_kernels": spec.cpu_kernels,
            "faces": args.faces,
            "inputs": source,
            "seconds_per_repeat": spec_times,
            "warmup_s": warmup,
            "faces_per_s": args.faces / seconds,
            "speedup": ref_seconds / seconds,
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "psnr_db": psnr_db(result["image"], ref_result["image"]),
            "index_agreement": idx,
            "gflops": args.faces / seconds * gflop,
        }
        rows.append(row)
        print(format_row(row), flush=True)
    with_bf16 = any(p.precision.startswith("bf16") for p in paths)
    limits = roofline(name, gflop, device, rows[0]["faces_per_s"], with_bf16)
    print(format_roofline(limits), flush=True)
    return rows, limits


# ------------------------------------------------------------------------------------- whole photos


def bench_whole_photos(name: str, device: str, args, fast: PathSpec) -> list[dict]:
    """Faces/s through FaceRestorer (detect, align, network, paste): reference vs the fast path."""
    try:
        from iqpfr.restorer import FaceRestorer
    except ImportError as exc:
        print(f"whole-photo pipeline skipped: {exc}")
        return []
    photos = sorted(p for p in args.whole_photos.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    photos = photos[: args.photo_limit]
    rows = []
    for label, spec in (("reference", REFERENCE), ("fast", fast)):
        model = build_model(name, args.weights)
        if spec != REFERENCE:
            model = prepare_for_inference(
                model,
                device=device,
                precision=spec.precision,
                channels_last=spec.channels_last,
                compile=spec.compile,
                batch_size=spec.batch,
                backend=spec.backend,
                workers=spec.workers,
                cpu_kernels=spec.cpu_kernels,
            )
        restorer = FaceRestorer(model, device=device, detector=args.detector)
        restorer.restore(str(photos[0]))  # warm-up: detector load, compilation
        start = time.perf_counter()
        results = restorer.restore_batch([str(p) for p in photos], batch_size=spec.batch, fidelity=args.w)
        seconds = time.perf_counter() - start
        faces = sum(len(r.faces) for r in results)
        row = {
            "model": name,
            "device": device,
            "pipeline": label,
            "path": spec.label,
            "photos": len(photos),
            "faces": faces,
            "seconds": seconds,
            "faces_per_s": faces / seconds if faces else 0.0,
            "photos_per_s": len(photos) / seconds,
        }
        rows.append(row)
        print(
            f"  whole photos [{label}: {spec.label}]: {len(photos)} photos, {faces} faces, {seconds:.1f} s, "
            f"{row['faces_per_s']:.3f} faces/s",
            flush=True,
        )
    if len(rows) == 2 and rows[0]["faces_per_s"]:
        rows[1]["speedup"] = rows[1]["faces_per_s"] / rows[0]["faces_per_s"]
    return rows


# ------------------------------------------------------------------------------------------ report


HEADER = f"{'model':<16} {'device':<6} {'path':<28} {'faces/s':>9} {'speed-up':>9} {'max|diff|':>10} {'PSNR dB':>8} {'codes':>7} {'GFLOP/s':>8}"


def format_row(r: dict) -> str:
    idx = "-" if r["index_agreement"] is None else f"{100 * r['index_agreement']:.1f}%"
    psnr = "inf" if r["psnr_db"] == float("inf") else f"{r['psnr_db']:.1f}"
    return (
        f"{r['model']:<16} {r['device']:<6} {r['path']:<28} {r['faces_per_s']:>9.3f} {r['speedup']:>8.2f}x "
        f"{r['max_abs_diff']:>10.2e} {psnr:>8} {idx:>7} {r['gflops']:>8.1f}"
    )


def headline(rows: list[dict]) -> dict | None:
    """Fastest path with PSNR >= 40 dB vs fp32 eager batch-1, for the first model on the last device."""
    if not rows:
        return None
    model, device = rows[0]["model"], rows[-1]["device"]
    group = [r for r in rows if r["model"] == model and r["device"] == device]
    exact = [r for r in group if r["psnr_db"] >= PSNR_GOAL_DB]
    best = max(exact, key=lambda r: r["faces_per_s"])
    return {
        "model": model,
        "device": device,
        "path": best["path"],
        "speedup": best["speedup"],
        "faces_per_s": best["faces_per_s"],
        "reference_faces_per_s": group[0]["faces_per_s"],
        "psnr_db": best["psnr_db"],
    }


def environment(threads: int) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "threads": threads,
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["codeformer", "gfpgan-v1.4"], help="presets")
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when present")
    parser.add_argument("--weights", default="conformance", help="conformance | random | checkpoint path")
    parser.add_argument("--faces", type=int, default=4, help="faces per timed repeat (default 4)")
    parser.add_argument(
        "--faces-dir",
        type=Path,
        default=DEFAULT_FACES if DEFAULT_FACES.is_dir() else None,
        help="aligned face photos (default: ../shared/data/codeformer_cropped_faces)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="batch of the batched paths (default: --faces on CPU, 64 on CUDA)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds over all paths (median)")
    parser.add_argument("--w", type=float, default=0.5, help="fidelity weight (default 0.5)")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile paths (slow to compile)"
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="time the bf16 paths: "
        "auto = on CUDA and on CPUs with native bf16 (AMX/AVX-512-BF16); elsewhere bf16 is "
        "emulated and several times slower than fp32",
    )
    parser.add_argument(
        "--cpu-kernels",
        choices=("auto", "on", "off"),
        default="auto",
        help="time iqpfr's CPU kernels (iqpfr.kernels, built on first use): auto = when they build",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument(
        "--whole-photos",
        type=Path,
        default=None,
        help="folder of photos for the whole-photo pipeline (e.g. ../shared/data/codeformer_whole_imgs)",
    )
    parser.add_argument("--photo-limit", type=int, default=7, help="photos used from --whole-photos")
    parser.add_argument("--detector", default="dlib-hog", help="face detector of the whole-photo pipeline")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "inference.json")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 paths are the exact reference
    torch.backends.cudnn.allow_tf32 = False
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    env = environment(torch.get_num_threads())
    print(
        f"torch {env['torch']}, {env['cpu']} ({env['cpu_capability']}, native bf16: {env['cpu_fast_bf16']}), "
        f"{env['threads']} threads, load {env['load_average_start']}, cuda: {env['cuda']}"
    )
    with_kernels = False
    if args.cpu_kernels != "off" and "cpu" in devices:
        from iqpfr.kernels import cpu_kernels_available

        with_kernels, why = cpu_kernels_available()
        if not with_kernels:
            if args.cpu_kernels == "on":
                raise SystemExit(why)
            print(f"(no cpu_kernels paths: {why})")
    print(HEADER)
    rows, photo_rows, rooflines = [], [], []
    for device in devices:
        batch = args.batch or (args.faces if device == "cpu" else 64)
        faces = args.faces if device == "cpu" or args.batch else max(args.faces, batch)
        run_args = argparse.Namespace(**{**vars(args), "faces": faces})
        for name in args.models:
            with_bf16 = args.bf16 == "on" or (
                args.bf16 == "auto" and (device == "cuda" or cpu_has_fast_bf16())
            )
            paths = default_paths(device, batch, args.compile, with_bf16, with_kernels)
            model_rows, limits = bench_model(name, device, run_args, paths)
            rows += model_rows
            rooflines.append(limits)
            if args.whole_photos is not None:
                exact = [r for r in model_rows if r["psnr_db"] >= PSNR_GOAL_DB]
                best = max(exact, key=lambda r: r["faces_per_s"])
                spec = PathSpec(
                    best["precision"],
                    best["channels_last"],
                    best["batch"],
                    best["compile"],
                    cuda_graphs=best["cuda_graphs"],
                    backend=best["backend"],
                    workers=best["workers"],
                    cpu_kernels=best["cpu_kernels"],
                )
                photo_rows += bench_whole_photos(name, device, run_args, spec)
    head = headline(rows)
    if head:
        limits = next(r for r in rooflines if (r["model"], r["device"]) == (head["model"], head["device"]))
        head["fp32_ceiling_speedup"] = limits["fp32_ceiling_speedup"]
    env["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {
        "environment": env,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "paths": rows,
        "roofline": rooflines,
        "whole_photo": photo_rows,
        "headline": head,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    from iqpfr.utils.fs import atomic_write_text

    atomic_write_text(args.json, json.dumps(report, indent=2, default=str))
    print(f"wrote {args.json}; load average at end {env['load_average_end']}")
    if head:
        print(
            f"HEADLINE {head['model']} {head['device']}: fastest path with PSNR >= {PSNR_GOAL_DB:.0f} dB is "
            f"'{head['path']}' at {head['faces_per_s']:.3f} faces/s = {head['speedup']:.2f}x fp32 eager batch-1 "
            f"({head['reference_faces_per_s']:.3f} faces/s); fp32 matmul-peak ceiling of direct-convolution "
            f"arithmetic {head['fp32_ceiling_speedup']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
