"""What ``iqpfr restore --task color`` changes in the photo command (kept here so the CLI edit is small)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from iqpfr.tasks.color.enhancer import DEFAULT_FIDELITY, DEFAULT_QUALITY, DEFAULT_TRANSFER, DEFAULT_WEIGHTS


def apply_task_defaults(args: argparse.Namespace) -> None:
    """Colour-task defaults on parsed ``iqpfr restore`` arguments (in place): the colour weights
    (``DEFAULT_WEIGHTS``) unless --weights/--model is given, w = 0 for ``-w auto``, q = 0.95 unless --quality-target is
    given, no face up-sampling unless asked, and ``--grayscale off`` always: monochrome photos are
    to be coloured, not kept monochrome."""
    if args.weights is None and args.model is None and not args.random_init:
        args.weights = DEFAULT_WEIGHTS
    if str(args.fidelity).strip() == "auto":
        args.fidelity = str(DEFAULT_FIDELITY)
    if args.quality_target is None:
        args.quality_target = DEFAULT_QUALITY
    if args.face_upsample is None:
        args.face_upsample = False
    args.grayscale = "off"


def color_finish(args: argparse.Namespace, write: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A ``finish`` callback for ``FaceRestorer.iter_restore``: the whole-photo colour step
    (``recolor_result``), then ``write``."""
    from iqpfr.tasks.color.enhancer import recolor_result

    def finish(result):
        recolor_result(result, result.source, upscale=args.upscale, aligned=args.aligned,
                       whole_photo=getattr(args, "whole_photo", "affine"),
                       gray_background=getattr(args, "gray_background", "keep"),
                       transfer=getattr(args, "color_transfer", DEFAULT_TRANSFER))
        return write(result)

    return finish
