"""``iqpfr export onnx MODEL -o model.onnx``: ONNX export with an onnxruntime check;
``iqpfr export weights MODEL -o model.safetensors``: one self-describing fp16 weight file."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a network (ONNX, or one fp16 weight file)",
        description="Export a restoration network for deployment.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    p = formats.add_parser(
        "onnx",
        help="ONNX graph with inputs lq, w, quality and a dynamic batch axis",
        description="Export MODEL to ONNX. Graph inputs: lq float32 (B,3,S,S) in [-1,1], w float32 (B,) "
        "fidelity, quality float32 (B,) target quality; output: image float32 (B,3,S,S), raw. "
        "w is ignored by GFPGAN and quality by networks without quality conditioning.",
        epilog="examples:\n"
        "  iqpfr export onnx codeformer --weights codeformer.pth -o codeformer.onnx --check\n"
        "  iqpfr export onnx runs/iqpfr-256/model.safetensors -o iqpfr.onnx --batch 4\n"
        "  iqpfr export onnx gfpgan-tiny --random-init -o tiny.onnx --check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="checkpoint file / model folder / weight-zoo name, or a "
        "preset name (see --weights and --random-init)",
    )
    p.add_argument(
        "-o", "--output", required=True, help="the .onnx file to write (never overwritten unless --overwrite)"
    )
    p.add_argument("--weights", help="with a preset name MODEL: weight file to load (strict)")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="with a preset name MODEL: export random weights (for testing deployments)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--batch", type=int, default=1, help="batch size traced (default: 1)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to --batch")
    p.add_argument(
        "--check",
        action="store_true",
        help="run the file in onnxruntime and compare with PyTorch (max abs diff; fails above 1e-3)",
    )
    p.add_argument(
        "--io-names",
        help="host-runner layout instead of lq,w,quality: 'input,weight' (facefusion / ReActor: input float32 "
        "(B,3,S,S) in [-1,1], weight float64 (1,), output 'output') or 'input' (fidelity baked in)",
    )
    p.add_argument("--io-size", type=int, help="with --io-names: the crop side the host feeds (a multiple of the "
                   "network's; resized inside the graph), e.g. 512")
    p.add_argument("--fidelity", type=float, default=0.5, help="w baked in when the graph has no weight input (0.5)")
    p.add_argument("--quality-target", type=float, default=0.9, help="with --io-names: the quality target baked in (0.9)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_onnx)

    p = formats.add_parser(
        "weights",
        help="one self-describing .safetensors (fp16 by default) of a trained model",
        description="Write MODEL (a run's model_ema.safetensors, any checkpoint load_model reads, or a "
        "weight-zoo name) as one self-describing .safetensors in fp16 / bf16 / fp32, read it back and "
        "report its size, sha256 and the largest output difference to MODEL.",
        epilog="examples:\n"
        "  iqpfr export weights runs/stage3/model_ema.safetensors -o my_model.safetensors\n"
        "  iqpfr export weights runs/plug/model_ema.safetensors -o plug_fp32.safetensors --dtype fp32",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint file / model folder / weight-zoo name")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16",
                   help="floating-point type of the stored tensors (default: fp16)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_weights)


def _load(args: argparse.Namespace):
    from pathlib import Path

    from iqpfr.cli import CLIError
    from iqpfr.models.factory import PRESETS
    from iqpfr.weights.checkpoint import create_model, load_model

    if args.model in PRESETS:
        if args.weights is None and not args.random_init:
            raise CLIError(
                f"{args.model!r} is a preset: pass --weights FILE, or --random-init to export random weights"
            )
        return create_model(args.model, weights=args.weights)
    if args.weights is not None or args.random_init:
        raise CLIError(f"--weights/--random-init need a preset name, got {args.model!r}")
    try:
        return load_model(args.model)
    except FileNotFoundError as exc:
        raise CLIError(f"{args.model}: not a preset name and no such checkpoint ({exc})") from None
    except Exception as exc:  # corrupt / mismatched file: one line, naming it
        name = Path(args.model).name
        raise CLIError(f"{name}: could not load ({type(exc).__name__}: {exc})") from None


def run_onnx(args: argparse.Namespace) -> int:
    from iqpfr.cli import CLIError

    try:
        import onnx  # noqa: F401

        if args.check:
            import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise CLIError(f"needs the onnx extra: pip install 'iqpfr[onnx]' ({exc.name} missing)") from None
    if args.batch < 1:
        raise CLIError(f"--batch must be >= 1, got {args.batch}")

    from iqpfr.export import export_onnx

    model = _load(args)
    try:
        report = export_onnx(
            model,
            args.output,
            opset=args.opset,
            batch=args.batch,
            dynamic_batch=not args.static_batch,
            check=args.check,
            overwrite=args.overwrite,
            io_names=tuple(n.strip() for n in args.io_names.split(",")) if args.io_names else None,
            io_size=args.io_size,
            fidelity=args.fidelity,
            quality=args.quality_target,
        )
    except (FileExistsError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        batch = f"batch {args.batch}" if args.static_batch else "dynamic batch"
        print(
            f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, opset {report.opset}, {batch}, "
            f"{report.image_size}x{report.image_size}, {report.export_seconds:.1f} s)"
        )
        if report.max_abs_diff is not None:
            verdict = "OK" if report.passed else "FAILED"
            print(
                f"check: onnxruntime vs PyTorch max |diff| = {report.max_abs_diff:.3g} over batches "
                f"{list(report.checked_batches)} (tolerance {report.tolerance:g}): {verdict}"
            )
    return 0 if report.passed in (None, True) else 1


def run_weights(args: argparse.Namespace) -> int:
    from pathlib import Path

    from iqpfr.cli import CLIError
    from iqpfr.weights.release import export_weights

    if Path(args.output).suffix != ".safetensors":
        raise CLIError(f"{args.output}: the output must be a .safetensors file")
    try:
        report = export_weights(args.model, args.output, dtype=args.dtype, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise CLIError(str(exc)) from None
    except FileNotFoundError as exc:
        raise CLIError(f"{args.model}: no such checkpoint ({exc})") from None
    except Exception as exc:  # corrupt / mismatched file: one line, naming it
        raise CLIError(f"{Path(args.model).name}: could not export ({type(exc).__name__}: {exc})") from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        diff = "" if report.max_abs_diff is None else f"; {args.dtype} vs source max |diff| {report.max_abs_diff:.4f}"
        print(f"wrote {report.path}: {report.bytes:,} bytes, sha256 {report.sha256}{diff}")
    return 0
