"""What the web page accepts: stated on the page, enforced with a sentence, never silently.

A photo over a limit is refused with a message naming it and the limit (the rest of the batch goes
on); nothing is quietly down-scaled or switched off, unlike demos that lower the upscale factor for
large images without saying so. ``iqpfr restore`` has none of these limits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class LimitError(ValueError):
    """An input or setting over one of the page's limits; ``str(exc)`` is one sentence."""


@dataclass(frozen=True)
class Limits:
    """max_side: longest input side in px; max_output_side: longest output side (input x upscale);
    max_faces: faces restored per photo (the largest ones; the page says when more were found);
    max_files: photos per request; max_upload_mb: size of one uploaded file (Gradio refuses larger);
    max_upscale: the upscale control's top; max_video_seconds: the longest video."""

    max_side: int = 4096
    max_output_side: int = 8192
    max_faces: int = 20
    max_files: int = 10
    max_upload_mb: int = 50
    max_upscale: float = 4.0
    max_video_seconds: float = 60.0

    def describe(self) -> str:
        """The limits as one line of Markdown for the page."""
        return (
            f"Limits of this page: up to {self.max_files} files per run, {self.max_upload_mb} MB per file, "
            f"{self.max_side} px on the longest side, {self.max_output_side} px after up-scaling "
            f"(upscale at most x{self.max_upscale:g}), the {self.max_faces} largest faces of a photo, "
            f"videos up to {self.max_video_seconds:g} s. "
            "Larger jobs: `iqpfr restore` on the command line has no such limits."
        )

    def check_count(self, count: int) -> None:
        if count < 1:
            raise LimitError("No photo given: upload one or more photos first.")
        if count > self.max_files:
            raise LimitError(f"{count} files given; this page takes at most {self.max_files} per run "
                             "(use `iqpfr restore` for more).")

    def check_upscale(self, upscale: float) -> None:
        if not 0 < upscale <= self.max_upscale:
            raise LimitError(f"Upscale x{upscale:g} is outside this page's range (0, {self.max_upscale:g}].")

    def check_size(self, name: str, width: int, height: int, upscale: float) -> None:
        """Refuse a photo whose input or output side is over the limit."""
        side = max(width, height)
        if side > self.max_side:
            raise LimitError(f"{name} is {width} x {height} px; this page takes photos up to {self.max_side} px "
                             "on the longest side (shrink it, or use `iqpfr restore`).")
        if side * upscale > self.max_output_side:
            raise LimitError(f"{name}: x{upscale:g} would make it {round(width * upscale)} x "
                             f"{round(height * upscale)} px; this page writes at most {self.max_output_side} px "
                             "on the longest side (choose a smaller upscale, or use `iqpfr restore`).")

    def check_video(self, name: str, seconds: float) -> None:
        if seconds > self.max_video_seconds:
            raise LimitError(f"{name} is {seconds:.0f} s long; this page restores videos up to "
                             f"{self.max_video_seconds:g} s (cut it, or use `iqpfr restore` with --start/--duration).")

    def check_file_size(self, name: str, path: str | os.PathLike) -> None:
        """Uploads are capped by Gradio already; this also covers files given through the API."""
        size = Path(path).stat().st_size
        if size > self.max_upload_mb * 1024 * 1024:
            raise LimitError(f"{name} is {size / 1e6:.0f} MB; this page takes files up to {self.max_upload_mb} MB.")


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding the pixels; None if unreadable
    (the full read then reports why)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # any decoder error: the real read names the reason
        return None
