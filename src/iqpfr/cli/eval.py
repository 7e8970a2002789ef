"""``iqpfr eval --pred DIR [--gt DIR] --metrics psnr,ssim,ids,lmd,niqe -o results.csv``.

Writes a per-image CSV (resumable: rows already complete are skipped), ``results.summary.json`` and
``results.summary.md`` (statistics, protocol of every metric, package versions, config) and
``results_plots/distributions.png``. Predictions and GT are paired by relative path and file stem.
Exit code 1 if any image failed (it is reported and skipped), 2 on a usage error.
"""

from __future__ import annotations

import argparse

DEFAULT_METRICS_WITH_GT = "psnr,ssim,ids,lmd"
DEFAULT_METRICS_NO_GT = "niqe"


def add_eval_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``eval`` and ``eval-sweep``."""
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated metric names (default: {DEFAULT_METRICS_WITH_GT} with --gt, "
                   f"{DEFAULT_METRICS_NO_GT} without); 'list' prints all")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] | mps")
    p.add_argument("--crop-border", type=int, default=0, help="pixels cropped per side for PSNR/SSIM (default 0)")
    p.add_argument("--fid-ref", default=None, help="FID/KID reference: image folder or statistics .npz (default: --gt)")
    p.add_argument("--fid-weights", default="inception-fid", metavar="NAME|PATH",
                   help="FID Inception weights: zoo name (sha256-checked) or a local file (default inception-fid)")
    p.add_argument("--fid-save-ref", default=None, metavar="NPZ",
                   help="save the reference statistics computed from a --fid-ref/--gt folder (reuse with --fid-ref NPZ)")
    p.add_argument("--ids-model", default="dlib", choices=("dlib", "arcface"), help="identity embedding (default dlib)")
    p.add_argument("--arcface", default="arcface", metavar="NAME|PATH",
                   help="ArcFace ResNet-18 weights for --ids-model arcface (zoo name or file)")
    p.add_argument("--resize-to-gt", action="store_true", help="resize predictions to the GT size (bicubic)")
    p.add_argument("--strip-suffix", default="", metavar="TEXT",
                   help="remove TEXT from the end of prediction names before pairing with GT (e.g. _00); without it, "
                        "iqpfr restore's per-face names NAME_NN[_suffix] pair with NAME when that GT exists")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="compute restoration metrics (PSNR, SSIM, LPIPS, IDS, LMD, FID, NR-IQA)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", default=None, help="folder of restored images (required unless --metrics list)")
    p.add_argument("--gt", default=None, help="folder of ground-truth images (same names)")
    p.add_argument("-o", "--output", default="results.csv", help="per-image CSV (default results.csv)")
    add_eval_options(p)
    p.set_defaults(func=run)


def parse_metrics(text: str | None, has_gt: bool) -> list[str]:
    text = text or (DEFAULT_METRICS_WITH_GT if has_gt else DEFAULT_METRICS_NO_GT)
    return [m.strip() for m in text.split(",") if m.strip()]


def print_metric_list() -> None:
    from iqpfr.eval.protocol import list_metrics, metric_spec

    for name in list_metrics():
        spec = metric_spec(name)
        print(f"{name:10s} {spec.kind:4s} {'higher' if spec.higher_better else 'lower'}-better  {spec.protocol}")
    print("pyiqa:<name>  nr   any pyiqa metric when the optional pyiqa package is installed")


def config_from_args(args: argparse.Namespace, pred, gt, out_csv, metrics):
    from pathlib import Path

    from iqpfr.eval.runner import EvalConfig

    return EvalConfig(pred_dir=Path(pred), gt_dir=Path(gt) if gt else None, out_csv=Path(out_csv),
                      metrics=tuple(metrics), batch_size=args.batch_size, device=args.device,
                      crop_border=args.crop_border, fid_ref=args.fid_ref,
                      fid_save_ref=Path(args.fid_save_ref) if args.fid_save_ref else None,
                      fid_weights=args.fid_weights, ids_model=args.ids_model,
                      arcface_weights=args.arcface,
                      resize_to_gt=args.resize_to_gt, strip_suffix=args.strip_suffix, recursive=args.recursive, offline=args.offline,
                      plots=not args.no_plots)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from iqpfr.cli import CLIError
    from iqpfr.eval.runner import evaluate

    if args.metrics == "list":
        print_metric_list()
        return 0
    if args.pred is None:
        raise CLIError("--pred DIR is required")
    for label, folder in (("--pred", args.pred), ("--gt", args.gt)):
        if folder is not None and not Path(folder).is_dir():
            raise CLIError(f"{label} {folder}: no such folder")
    out = Path(args.output)
    if out.suffix.lower() != ".csv":
        raise CLIError(f"{out}: the per-image output must be a .csv file")
    cfg = config_from_args(args, args.pred, args.gt, out, parse_metrics(args.metrics, args.gt is not None))
    try:
        result = evaluate(cfg)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    for column, stats in result.summary["metrics"].items():
        if "mean" in stats:
            print(f"{column:10s} mean {stats['mean']:.4f}  (n={stats['n']})")
    for name, value in result.summary["set_metrics"].items():
        if isinstance(value, float):
            print(f"{name:10s} {value:.4f}")
    print(f"iqpfr eval: {len(result.rows)} images -> {out}; {len(result.failures)} failed", file=sys.stderr)
    return 1 if result.failures else 0
