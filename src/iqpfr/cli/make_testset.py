"""``iqpfr make-testset HQ_DIR -o OUT --protocol celeba-test --seed 0``: synthesise LQ/GT test pairs.

Writes ``OUT/gt/<name>.png`` (the HQ face at --size), ``OUT/lq/<name>.png`` (its degraded copy, same
size), ``OUT/params.csv``/``params.json`` (the sampled degradation of each image) and
``OUT/protocol.json``. ``celeba-test``: "large" blur/noise/JPEG ranges with a fixed down-sampling of
x8 for half of the images and x16 for the other half (``celeba-test-x8`` / ``-x16``: one factor for
all). Existing pairs are kept (re-runs only add missing ones) unless --overwrite.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("make-testset", help="synthesise a degraded test set (lq/ and gt/)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="HQ_DIR", help="folders or files of HQ aligned faces")
    p.add_argument("-o", "--output", required=True, help="output folder")
    # checked in run(): importing the protocol table here would load numpy for every `iqpfr --help`
    p.add_argument("--protocol", default="celeba-test",
                   help="celeba-test (half x8, half x16), celeba-test-x8, celeba-test-x16, large, small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512, help="GT/LQ side length in pixels (default 512)")
    p.add_argument("--recursive", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="rewrite existing pairs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from iqpfr.cli import CLIError
    from iqpfr.eval.testset import PROTOCOLS, make_testset

    if args.protocol not in PROTOCOLS:
        raise CLIError(f"--protocol {args.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if args.size < 16:
        raise CLIError(f"--size {args.size} is too small")
    try:
        report = make_testset(args.inputs, args.output, protocol=args.protocol, seed=args.seed, size=args.size,
                              recursive=args.recursive, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    print(f"iqpfr make-testset: {report.written} pairs written, {report.skipped} existing kept, "
          f"{len(report.failures)} failed -> {args.output}", file=sys.stderr)
    return 1 if report.failures else 0
