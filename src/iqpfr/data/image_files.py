"""Finding, reading and writing image files for the batch commands (degrade, make-testset, eval).

Reading returns uint8 RGB (H, W, 3); anything unreadable raises :class:`ImageReadError` with a
one-line message naming the file, so a batch can report it and go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# refuse decompression bombs before decoding them (a 512x512 face is 0.26 Mpx)
MAX_PIXELS = 100_000_000


class ImageReadError(ValueError):
    """An input image is missing, unreadable, empty or of an unsupported kind."""


def list_images(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[tuple[Path, Path]]:
    """Expand files and folders into sorted ``(path, relative_path)`` pairs of image files.

    A file given directly keeps its bare name as relative path; files inside a folder keep their path
    relative to that folder (sub-folders only with ``recursive``). Missing inputs raise FileNotFoundError.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for child in sorted(path.glob(pattern)):
                if child.is_file() and child.suffix.lower() in IMAGE_EXTENSIONS and not child.name.startswith("."):
                    found.append((child, child.relative_to(path)))
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); gray, alpha, palette and 16-bit inputs are converted.

    EXIF orientation is applied. Raises :class:`ImageReadError` naming the file on any failure.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
                arr = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
                rgb = np.repeat(arr[..., None], 3, axis=2)
            else:
                # alpha is dropped: metrics and degradations work on the colour channels only
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except Exception as exc:  # PIL raises many kinds (UnidentifiedImageError, OSError, DecompressionBomb...)
        raise ImageReadError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageReadError(f"{path}: empty image")
    return np.ascontiguousarray(rgb)


def write_rgb(path: str | os.PathLike, img: np.ndarray, *, overwrite: bool = False, jpeg_quality: int = 95) -> Path:
    """Atomically write a uint8 RGB (H, W, 3) array; format from the suffix (PNG is lossless)."""
    from PIL import Image

    from iqpfr.utils.fs import atomic_path

    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        kwargs = {"quality": jpeg_quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
        Image.fromarray(np.ascontiguousarray(img)).save(tmp, format=_pil_format(path), **kwargs)
    return path


def _pil_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP",
            ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, "PNG")
