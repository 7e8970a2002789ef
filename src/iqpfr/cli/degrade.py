"""``iqpfr degrade IN... -o OUT --preset large --seed 0``: write blindly degraded (LQ) copies.

Each output is a PNG at ``OUT/<relative path>.png``; the sampled parameters go to ``OUT/params.csv``
and ``OUT/params.json``. The generator of a file is derived from (seed, a hash of its relative path),
so a file's LQ copy does not depend on which other files are processed. Existing outputs are kept
(skipped) unless ``--overwrite``; inputs are never written.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("degrade", help="write synthetic low-quality copies of face images",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--preset", default="large", help="large | small | celeba-x8 | celeba-x16 | color (default: large)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from iqpfr.cli import CLIError
    from iqpfr.data.degradations import PRESETS, DegradationConfig, degrade, file_seed_index, sample_rng
    from iqpfr.data.params_table import merge_params_tables
    from iqpfr.io import ImageReadError, list_images, read_rgb, write_rgb

    if args.preset not in PRESETS:
        raise CLIError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    cfg = DegradationConfig.preset(args.preset)
    try:
        files = list_images(args.inputs, recursive=args.recursive)
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    if not files:
        raise CLIError("no image files found in the inputs")
    out_dir = Path(args.output)
    input_paths = {p.resolve() for p, _ in files}

    rows, failed, skipped = [], 0, 0
    for path, rel in tqdm(files, desc="degrade", unit="img", file=sys.stderr, disable=None):
        target = out_dir / rel.with_suffix(".png")
        if target.resolve() in input_paths:
            print(f"iqpfr degrade: {path}: output would overwrite an input; skipped", file=sys.stderr)
            failed += 1
            continue
        if target.exists() and not args.overwrite:
            skipped += 1
            continue
        try:
            img = read_rgb(path)
            lq, params = degrade(img, cfg, sample_rng(args.seed, 0, file_seed_index(str(rel))))
            write_rgb(target, lq, overwrite=args.overwrite)
        except (ImageReadError, ValueError, OSError) as exc:
            print(f"iqpfr degrade: {exc}" if str(path) in str(exc) else f"iqpfr degrade: {path}: {exc}",
                  file=sys.stderr)
            failed += 1
            continue
        rows.append({"file": str(rel.with_suffix(".png")).replace("\\", "/"), "source": str(path),
                     "preset": args.preset, "seed": args.seed, **params.to_dict()})
    if rows:
        merge_params_tables(out_dir, rows)
    print(f"iqpfr degrade: {len(rows)} written, {skipped} existing skipped, {failed} failed -> {out_dir}",
          file=sys.stderr)
    return 1 if failed else 0
