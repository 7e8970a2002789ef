"""``iqpfr eval-sweep --lq DIR --gt DIR -o OUT --w 0,0.5,1 --quality 0.9``: restore an aligned test set
at every (w, quality target) pair, evaluate each with ``iqpfr eval`` and tabulate the means in
``OUT/sweep.csv`` / ``sweep.md`` with quality-vs-fidelity plots in ``OUT/sweep_plots/``. Restored
images and per-setting CSVs are reused, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"values must lie in [0, 1], got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    from iqpfr.cli.eval import add_eval_options

    p = subparsers.add_parser("eval-sweep", help="restore a test set at several w / quality targets and evaluate",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lq", required=True, help="folder of aligned LQ faces (e.g. make-testset's lq/)")
    p.add_argument("--gt", default=None, help="folder of GT faces with the same names (e.g. gt/)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--w", type=_floats, default=[0.0, 0.5, 1.0], help="fidelity weights (default 0,0.5,1)")
    p.add_argument("--quality", type=_floats, default=[0.9], help="quality targets (default 0.9)")
    p.add_argument("--model", default=None, help="architecture / zoo name / weight file (default: the shipped model)")
    p.add_argument("--weights", default=None, help="weight file or zoo name")
    p.add_argument("--random-init", action="store_true", help="random network (tests and demos only)")
    add_eval_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from iqpfr.cli import CLIError
    from iqpfr.cli.eval import config_from_args, parse_metrics
    from iqpfr.eval.sweep import SweepSettings, run_sweep
    from iqpfr.restorer import ModelUnavailableError, load_restoration_model

    for label, folder in (("--lq", args.lq), ("--gt", args.gt)):
        if folder is not None and not Path(folder).is_dir():
            raise CLIError(f"{label} {folder}: no such folder")
    out = Path(args.output)
    if out.resolve() in (Path(args.lq).resolve(), Path(args.gt).resolve() if args.gt else None):
        raise CLIError("the output folder must differ from --lq and --gt")
    try:
        model, description = load_restoration_model(args.model, args.weights, random_init=args.random_init,
                                                     offline=args.offline)
    except ModelUnavailableError as exc:
        raise CLIError(str(exc)) from None
    print(f"iqpfr eval-sweep: model {description}", file=sys.stderr)
    metrics = parse_metrics(args.metrics, args.gt is not None)
    cfg = config_from_args(args, out, args.gt, out / "unused.csv", metrics)
    cfg.extra["model"] = description
    try:
        table, failures = run_sweep(model, Path(args.lq), out, cfg,
                                    SweepSettings(ws=args.w, qualities=args.quality, batch_size=args.batch_size))
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    print((out / "sweep.md").read_text(), end="")
    print(f"iqpfr eval-sweep: {len(table)} settings -> {out / 'sweep.csv'}; {len(failures)} failures", file=sys.stderr)
    return 1 if failures else 0
