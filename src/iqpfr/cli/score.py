"""``iqpfr score PATH... --metrics niqe,piqe,face-iqa -o scores.csv``: score images, build the ensemble S.

Inputs are files, folders (``--recursive`` for sub-folders) and glob patterns. Images are scored in
batches (images of one size per forward pass) with a progress bar on stderr.

CSV columns, in order:

    path, imagename, <metric>..., <metric>_norm..., score

- ``path``: the image path as found; ``imagename``: its file name (the key the training dataset reads);
- ``<metric>``: the raw score of each metric (its own scale and direction);
- ``<metric>_norm``: min-max normalised over ALL rows of the CSV, direction fixed so that higher is
  better: (s - min) / (max - min + 1e-6), or (max - s) / (max - min + 1e-6) for lower-better metrics;
- ``score``: the ensemble average S = mean of the ``_norm`` columns (method.md section 4.2), in [0, 1).

The run is resumable: rows already in ``-o`` with values for every requested metric are kept and not
re-scored (normalisation is then redone over the whole set). The CSV is written atomically, also every
``--save-every`` batches and on Ctrl-C. Next to it go ``<csv>.json`` (metrics, directions, min/max,
scorer provenance such as the pyiqa version, HQ+ summary) and, unless ``--no-hist``, a histogram of S
(``--hist``, default ``<csv stem>_hist.png``). Unreadable images are reported (one line each) and
skipped; the exit code is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("score", help="score images with NR-IQA metrics and build the ensemble S",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("--metrics", default="niqe,piqe,face-iqa",
                   help="comma-separated metric names (built-in: niqe, piqe, brisque, face-iqa; "
                        "pyiqa:<name> with the iqa extra); default: niqe,piqe,face-iqa")
    p.add_argument("-o", "--output", required=True, help="CSV file to write (resumed if it exists)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] | mps")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--threshold", type=float, default=0.7, help="HQ+ threshold on S for the summary (default 0.7)")
    p.add_argument("--hist", default=None, help="histogram PNG of S (default: <csv stem>_hist.png)")
    p.add_argument("--no-hist", action="store_true", help="do not draw the histogram")
    p.add_argument("--save-every", type=int, default=50, help="rewrite the CSV every N batches (default 50)")
    p.add_argument("--niqe-params", default=None, help="NIQE pristine model .npz (default: the standard one)")
    p.add_argument("--brisque-model", default=None, help="BRISQUE SVR model (libsvm allmodel or .npz)")
    p.add_argument("--face-iqa-weights", default=None, help="face-iqa weights (default: the shipped ones)")
    p.set_defaults(func=run)


def expand_inputs(inputs: list[str], recursive: bool) -> list[Path]:
    """Files, folders and glob patterns -> sorted unique image paths (missing inputs raise CLIError)."""
    import glob

    from iqpfr.cli import CLIError
    from iqpfr.io import IMAGE_EXTENSIONS, list_images

    found: list[Path] = []
    for item in inputs:
        if Path(item).exists():
            paths = [p for p, _ in list_images([item], recursive=recursive)]
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=recursive))
            if not matches:
                raise CLIError(f"{item}: pattern matches no file")
            paths = []
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    paths += [p for p, _ in list_images([mp], recursive=recursive)]
                elif mp.suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(mp)
        else:
            raise CLIError(f"{item}: no such file or folder")
        found.extend(paths)
    seen, unique = set(), []
    for p in found:
        if str(p) not in seen:
            seen.add(str(p))
            unique.append(p)
    return unique


def build_scorers(names: list[str], args: argparse.Namespace, device):
    from iqpfr.cli import CLIError
    from iqpfr.quality.registry import create_scorer

    scorers = []
    for name in names:
        kwargs = {}
        if name == "niqe" and args.niqe_params:
            kwargs["params_path"] = args.niqe_params
        if name == "brisque":
            kwargs["model_path"] = args.brisque_model
        if name == "face-iqa" and args.face_iqa_weights:
            kwargs["weights"] = args.face_iqa_weights
        if name.startswith("pyiqa:"):
            kwargs["device"] = device
        try:
            scorers.append((name, create_scorer(name, **kwargs).to(device).eval()))
        except (ImportError, FileNotFoundError, ValueError, RuntimeError) as exc:
            raise CLIError(f"metric {name!r}: {exc}") from None
    return scorers


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from iqpfr.cli import CLIError
    from iqpfr.quality.registry import list_scorers
    from iqpfr.quality.score_table import ScoreTable
    from iqpfr.utils.device import resolve_device

    builtin = set(list_scorers())
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    names = [n.lower() if n.lower() in builtin else n for n in names]
    if not names:
        raise CLIError("--metrics is empty")
    if len(set(names)) != len(names):
        raise CLIError(f"--metrics lists a metric twice: {args.metrics}")
    if args.batch_size < 1:
        raise CLIError("--batch-size must be >= 1")
    out = Path(args.output)
    if out.suffix.lower() != ".csv":
        raise CLIError(f"{out}: the output must be a .csv file")
    paths = expand_inputs(args.inputs, args.recursive)
    if any(p.resolve() == out.resolve() for p in paths):
        raise CLIError(f"{out}: the output is also an input")
    try:
        table = ScoreTable.load(out, names) if out.exists() else ScoreTable(names)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    todo = [p for p in paths if not table.is_complete(str(p))]
    if not paths:
        raise CLIError("no image files found in the inputs")
    print(f"iqpfr score: {len(paths)} images, {len(paths) - len(todo)} already scored in {out}", file=sys.stderr)

    device = resolve_device(args.device)
    failed = 0
    if todo:
        scorers = build_scorers(names, args, device)
        table.provenance = {n: {"scorer": s.name, "higher_better": s.higher_better, **s.extra_info()}
                            for n, s in scorers}
        bar = tqdm(total=len(todo), desc="score", unit="img", file=sys.stderr, disable=None)
        try:
            for n_batch, start in enumerate(range(0, len(todo), args.batch_size), 1):
                batch = todo[start: start + args.batch_size]
                failed += score_batch(batch, scorers, table, device)
                bar.update(len(batch))
                if n_batch % max(1, args.save_every) == 0:
                    table.save(out)
        except KeyboardInterrupt:
            table.save(out)
            print(f"iqpfr score: interrupted; {len(table.rows)} rows saved to {out}", file=sys.stderr)
            raise
        finally:
            bar.close()
    table.finalize(threshold=args.threshold)
    table.save(out)
    from iqpfr.quality.ensemble import format_summary

    print(format_summary(table.summary))
    if not args.no_hist and table.rows:
        hist = Path(args.hist) if args.hist else out.with_name(out.stem + "_hist.png")
        try:
            table.plot_histogram(hist, threshold=args.threshold)
            print(f"histogram of S: {hist}")
        except ImportError:
            print("iqpfr score: matplotlib is not installed; no histogram (pip install 'iqpfr[plots]')", file=sys.stderr)
    print(f"scores: {out} ({len(table.rows)} rows)")
    if failed:
        print(f"iqpfr score: {failed} image(s) failed", file=sys.stderr)
    return 1 if failed else 0


def score_batch(batch: list[Path], scorers, table, device) -> int:
    """Read, group by size, score and add rows; returns the number of failed images."""
    import numpy as np
    import torch

    from iqpfr.io import ImageReadError, read_rgb

    failed = 0
    by_shape: dict[tuple[int, ...], list[tuple[Path, np.ndarray]]] = {}
    for path in batch:
        try:
            img = read_rgb(path)
        except ImageReadError as exc:
            print(f"iqpfr score: {exc}", file=sys.stderr)
            failed += 1
            continue
        by_shape.setdefault(img.shape, []).append((path, img))
    for group in by_shape.values():
        x = torch.from_numpy(np.stack([img for _, img in group])).permute(0, 3, 1, 2).float().div_(255).to(device)
        try:
            values = _score_all(scorers, x)
        except (ValueError, RuntimeError):
            # one bad image (e.g. too small for NIQE) must not sink its batch: retry one by one
            values = None
        for i, (path, _) in enumerate(group):
            if values is not None:
                table.add(str(path), {n: float(v[i]) for n, v in values.items()})
                continue
            try:
                single = _score_all(scorers, x[i: i + 1])
            except (ValueError, RuntimeError) as exc:
                print(f"iqpfr score: {path}: {exc}", file=sys.stderr)
                failed += 1
                continue
            table.add(str(path), {n: float(v[0]) for n, v in single.items()})
    return failed


def _score_all(scorers, x):
    import torch

    with torch.no_grad():
        return {n: s.score(x).double().cpu().numpy() for n, s in scorers}
