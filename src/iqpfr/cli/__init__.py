"""The ``iqpfr`` command line: ``iqpfr <command> ...``.

Each command lives in its own module of this package that defines ``register(subparsers)``;
the modules are listed explicitly below (no folder scanning) and import their heavy
dependencies inside the handler, so ``iqpfr --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command modules, in the order they appear in `iqpfr --help`
COMMAND_MODULES = (
    "restore",
    "enhance",
    "score",
    "iqa",
    "degrade",
    "make_testset",
    "train",
    "eval",
    "eval_sweep",
    "export",
    "weights",
    "doctor",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    from iqpfr import __version__

    parser = argparse.ArgumentParser(
        prog="iqpfr",
        description="Blind face restoration guided by an image-quality prior (IQPFR), "
        "with CodeFormer- and GFPGAN-compatible networks.",
    )
    parser.add_argument("--version", action="version", version=f"iqpfr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"iqpfr.cli.{name}")
        except ModuleNotFoundError as exc:
            # a command whose module is not written yet is simply absent
            if exc.name == f"iqpfr.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``iqpfr`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("iqpfr: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        print(f"iqpfr {args.command}: error: {exc}", file=sys.stderr)
        return 2


class CLIError(Exception):
    """An error the CLI reports as one line and exit code 2 (no traceback)."""
