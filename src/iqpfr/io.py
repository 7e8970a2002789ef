"""Image reading and writing that keeps what users care about.

``read_image`` returns a :class:`LoadedImage`: RGB pixels in their native depth (uint8 or uint16),
the alpha channel separately, whether the file was single-channel, and the EXIF/ICC metadata, with
the EXIF orientation already applied. ``write_image`` writes it back atomically in the same depth,
with alpha and metadata where the target format can hold them. The batch commands (degrade,
make-testset, eval, score) use the plain-array helpers ``list_images`` / ``read_rgb`` /
``write_rgb``. Every failure is an
:class:`ImageReadError` / :class:`ImageWriteError` whose message is one line naming the file.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # GIF: first frame
# a guard against decompression bombs (a tiny file claiming gigapixels); PIL refuses above ~179 MP too
DEFAULT_MAX_PIXELS = 178_000_000
_EXIF_ORIENTATION = 0x0112
_FORMAT_BY_SUFFIX = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
_ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")  # PIL reads 32-bit BMP back without alpha


class ImageReadError(ValueError):
    """A file that could not be read as an image; ``str(exc)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class ImageWriteError(Exception):
    """A file that could not be written; ``str(exc)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class LoadedImage:
    """An image ready for processing.

    pixels: (H, W, 3) RGB, uint8 or uint16 (single-channel sources are replicated to 3 channels).
    alpha:  (H, W) in the same dtype, or None.
    gray:   the source had one colour channel; written back as one channel.
    exif / icc_profile: metadata to write back (EXIF orientation reset to 1, pixels are upright).
    notes:  things the user should know (mode conversions, dropped frames).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    gray: bool = False
    path: Path | None = None
    format: str | None = None
    exif: bytes | None = None
    icc_profile: bytes | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def max_value(self) -> int:
        return 65535 if self.pixels.dtype == np.uint16 else 255

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.pixels.shape[1], self.pixels.shape[0]

    def rgb8(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB view for detectors."""
        return _to_uint8(self.pixels)

    def with_pixels(self, pixels: np.ndarray, alpha: np.ndarray | None) -> LoadedImage:
        return replace(self, pixels=pixels, alpha=alpha, notes=list(self.notes))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    return np.round(array.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)


def image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files (by extension, any case) in ``folder``, sorted; hidden files are skipped."""
    folder = Path(folder)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    found = [
        p
        for p in candidates
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(found)


def list_images(inputs: Iterable[str | os.PathLike], recursive: bool = False) -> list[tuple[Path, Path]]:
    """Expand files and folders into sorted ``(path, relative_path)`` pairs of image files.

    A file given directly keeps its bare name as relative path; files inside a folder keep their path
    relative to that folder (sub-folders only with ``recursive``). Missing inputs raise FileNotFoundError.
    """
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend((child, child.relative_to(path)) for child in image_files(path, recursive=recursive))
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


# ----------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file (any PIL format; 16-bit PNG/TIFF through OpenCV) into a LoadedImage.

    Raises ImageReadError with a one-line reason: missing, unreadable, empty, not an image,
    truncated, too large (decompression-bomb guard), unsupported mode.
    """
    path = Path(path)
    data = _read_bytes(path)
    image = decode_image(data, max_pixels=max_pixels, source=path)
    image.path = path
    return image


def read_rgb(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3) for metrics, degradations and datasets.

    Gray inputs are replicated, 16-bit ones scaled to 8 bits, alpha is dropped (these consumers work
    on colour only), EXIF orientation is applied. Raises ImageReadError naming the file.
    """
    return np.ascontiguousarray(read_image(path, max_pixels=max_pixels).rgb8())


def _read_bytes(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise ImageReadError(path, "is a directory, not an image file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    return data


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, source: object = None) -> LoadedImage:
    """Decode encoded image bytes; ``source`` names the file in error messages."""
    from PIL import Image, UnidentifiedImageError

    label = source if source is not None else "<bytes>"
    try:
        pil = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageReadError(label, "not an image (unrecognised or unsupported format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(label, f"too large to decode safely (decompression-bomb guard: {exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(label, f"corrupt image header ({exc})") from None

    with pil:
        width, height = pil.size
        if width <= 0 or height <= 0:
            raise ImageReadError(label, f"invalid size {width}x{height}")
        if width * height > max_pixels:
            raise ImageReadError(
                label,
                f"{width}x{height} is {width * height / 1e6:.0f} MP, above the {max_pixels / 1e6:.0f} MP limit "
                "(decompression-bomb guard; raise max_pixels if the image is genuine)",
            )
        notes: list[str] = []
        try:
            frames = getattr(pil, "n_frames", 1)
            if frames > 1:
                notes.append(f"animated/multi-frame ({frames} frames): only the first frame is used")
                pil.seek(0)
            fmt = pil.format
            exif = pil.getexif()  # may read past the pixel data (PNG eXIf chunk): inside the try
            orientation = int(exif.get(_EXIF_ORIENTATION, 1) or 1)
            icc = pil.info.get("icc_profile")
            if _is_sixteen_bit(data, pil):
                pixels, alpha, gray = _decode_sixteen_bit(data, label)
            else:
                pil.load()
                pixels, alpha, gray = _pil_to_arrays(pil, notes, label)
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
            raise ImageReadError(label, f"truncated or corrupt image data ({exc})") from None

    if orientation != 1:
        pixels = apply_orientation(pixels, orientation)
        alpha = None if alpha is None else apply_orientation(alpha, orientation)
        notes.append(f"EXIF orientation {orientation} applied")
        exif[_EXIF_ORIENTATION] = 1
    # a TIFF's "EXIF" is its whole IFD0 (strip offsets, compression...): not metadata to carry over
    exif_bytes = exif.tobytes() if len(exif) and fmt != "TIFF" else None
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        gray=gray,
        format=fmt,
        exif=exif_bytes,
        icc_profile=icc,
        notes=notes,
    )


def _is_sixteen_bit(data: bytes, pil) -> bool:
    if pil.format == "PNG":
        # IHDR: 8-byte signature, 4-byte length, "IHDR", width, height, then the bit depth byte
        return len(data) > 24 and data[12:16] == b"IHDR" and data[24] == 16
    if pil.format == "TIFF":
        bits = pil.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) == 16
    return False


def _decode_sixteen_bit(data: bytes, label) -> tuple[np.ndarray, np.ndarray | None, bool]:
    import cv2

    # PIL reduces 16-bit RGB PNGs to 8 bits; OpenCV keeps every bit
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageReadError(label, "truncated or corrupt 16-bit image data")
    if decoded.dtype != np.uint16:
        decoded = decoded.astype(np.uint16) * 257 if decoded.dtype == np.uint8 else decoded
    if decoded.ndim == 2:
        return np.repeat(decoded[:, :, None], 3, axis=2), None, True
    channels = decoded.shape[2]
    if channels == 1:
        return np.repeat(decoded, 3, axis=2), None, True
    if channels == 2:
        return np.repeat(decoded[:, :, :1], 3, axis=2), decoded[:, :, 1], True
    if channels == 3:
        return decoded[:, :, ::-1], None, False
    return decoded[:, :, 2::-1], decoded[:, :, 3], False


def _pil_to_arrays(pil, notes: list[str], label) -> tuple[np.ndarray, np.ndarray | None, bool]:
    mode = pil.mode
    if mode in ("RGBa", "La"):
        pil = pil.convert(mode[0] + "A" if mode == "La" else "RGBA")
        mode = pil.mode
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in pil.info
        pil = pil.convert("RGBA" if has_alpha else "RGB")
        notes.append("palette image expanded to RGB" + ("A" if has_alpha else ""))
        mode = pil.mode
    if mode == "1":
        pil, mode = pil.convert("L"), "L"
    if mode == "CMYK":
        pil, mode = pil.convert("RGB"), "RGB"
        notes.append("CMYK converted to RGB")
    if mode in ("YCbCr", "LAB", "HSV", "RGBX"):
        pil, mode = pil.convert("RGB"), "RGB"
    if mode == "L":
        gray = np.asarray(pil)
        return np.repeat(gray[:, :, None], 3, axis=2), None, True
    if mode == "LA":
        arr = np.asarray(pil)
        return np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1], True
    if mode == "RGB":
        return np.asarray(pil), None, False
    if mode == "RGBA":
        arr = np.asarray(pil)
        return arr[:, :, :3], arr[:, :, 3], False
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(pil)
        if arr.min() < 0 or arr.max() > 65535:
            arr = np.clip(arr, 0, 65535)
            notes.append("32-bit integer samples clipped to 16 bits")
        return np.repeat(arr.astype(np.uint16)[:, :, None], 3, axis=2), None, True
    if mode == "F":
        arr = np.asarray(pil, dtype=np.float32)
        scale = 65535.0 if arr.max() <= 1.0 else 1.0
        notes.append("floating-point samples converted to 16 bits")
        arr16 = np.clip(np.round(arr * scale), 0, 65535).astype(np.uint16)
        return np.repeat(arr16[:, :, None], 3, axis=2), None, True
    raise ImageReadError(label, f"unsupported image mode {mode!r}")


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Make an (H, W[, C]) array upright for an EXIF orientation value 1..8 (as PIL's exif_transpose)."""
    swap = (1, 0, 2) if array.ndim == 3 else (1, 0)
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(swap),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(swap),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(array))


# ------------------------------------------------------------------------------------ conversions


def from_array(
    array: np.ndarray, *, channel_order: str = "rgb", source: object = "<array>"
) -> LoadedImage:
    """Wrap an (H, W), (H, W, 1|3|4) array (uint8, uint16 or float in [0, 1]) as a LoadedImage."""
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageReadError(source, f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {array.shape}")
    if array.size == 0:
        raise ImageReadError(source, "empty array")
    if array.dtype == np.uint8 or array.dtype == np.uint16:
        native = array
    elif np.issubdtype(array.dtype, np.floating):
        native = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    else:
        raise ImageReadError(source, f"unsupported array dtype {array.dtype} (use uint8, uint16 or float)")
    if native.ndim == 2:
        return LoadedImage(pixels=np.repeat(native[:, :, None], 3, axis=2), gray=True)
    colour = native[:, :, :3]
    if channel_order == "bgr":
        colour = colour[:, :, ::-1]
    alpha = native[:, :, 3] if native.shape[2] == 4 else None
    return LoadedImage(pixels=np.ascontiguousarray(colour), alpha=None if alpha is None else alpha.copy())


def to_array(image: LoadedImage, *, channel_order: str = "rgb", dtype=None, gray: bool | None = None) -> np.ndarray:
    """Inverse of :func:`from_array`: (H, W) for gray, else (H, W, 3|4) in ``channel_order``."""
    gray = image.gray if gray is None else gray
    pixels = image.pixels
    if gray:
        colour = _luminance(pixels)
        out = colour if image.alpha is None else np.dstack([colour, image.alpha])
    else:
        colour = pixels[:, :, ::-1] if channel_order == "bgr" else pixels
        out = colour if image.alpha is None else np.dstack([colour, image.alpha])
    out = np.ascontiguousarray(out)
    if dtype is None or np.dtype(dtype) == out.dtype:
        return out
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return (out.astype(np.float32) / image.max_value).astype(dtype)
    if dtype == np.uint8:
        return _to_uint8(out)
    if dtype == np.uint16:
        return out.astype(np.uint16) * 257
    raise ValueError(f"unsupported output dtype {dtype}")


def _luminance(pixels: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of (H, W, 3) RGB, same dtype."""
    if pixels.shape[2] == 3 and np.array_equal(pixels[:, :, 0], pixels[:, :, 1]) and np.array_equal(
        pixels[:, :, 1], pixels[:, :, 2]
    ):
        return pixels[:, :, 0].copy()
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    luma = pixels.astype(np.float32) @ weights
    top = 65535 if pixels.dtype == np.uint16 else 255
    return np.clip(np.round(luma), 0, top).astype(pixels.dtype)


def from_pil(pil, *, source: object = "<PIL image>") -> LoadedImage:
    """Wrap a PIL image (any mode; EXIF orientation is NOT applied: PIL objects are taken as shown)."""
    notes: list[str] = []
    pil.load()
    pixels, alpha, gray = _pil_to_arrays(pil, notes, source)
    return LoadedImage(pixels=np.ascontiguousarray(pixels), alpha=alpha, gray=gray, notes=notes)


def to_pil(image: LoadedImage):
    """PIL image in the closest mode: L/LA/RGB/RGBA for 8-bit, I;16 for 16-bit gray.

    16-bit colour has no PIL mode and comes back as 8-bit RGB(A).
    """
    from PIL import Image

    if image.pixels.dtype == np.uint16:
        if image.gray and image.alpha is None:
            return Image.fromarray(_luminance(image.pixels), mode="I;16")
        image = image.with_pixels(_to_uint8(image.pixels), None if image.alpha is None else _to_uint8(image.alpha))
    arr = to_array(image, channel_order="rgb")
    return Image.fromarray(arr)


# ----------------------------------------------------------------------------------------- writing


def format_for_suffix(path: str | os.PathLike) -> str:
    """PIL format name for a file name's extension; ValueError when unsupported."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMAT_BY_SUFFIX:
        raise ValueError(f"unsupported output extension {suffix!r} (use one of {', '.join(IMAGE_EXTENSIONS)})")
    return _FORMAT_BY_SUFFIX[suffix]


def encode_image(image: LoadedImage, fmt: str, *, quality: int = 95) -> tuple[bytes, list[str]]:
    """Encode ``image`` as ``fmt`` (PIL format name); returns the bytes and notes on what was lost."""
    notes: list[str] = []
    alpha = image.alpha
    pixels = image.pixels
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        notes.append(f"alpha channel dropped: {fmt} has no alpha (choose png/webp/tiff to keep it)")
        alpha = None
    if pixels.dtype == np.uint16 and fmt not in _SIXTEEN_BIT_FORMATS:
        notes.append(f"reduced to 8 bits per channel: {fmt} cannot store 16 bits (choose png/tiff)")
        pixels = _to_uint8(pixels)
        alpha = None if alpha is None else _to_uint8(alpha)
    if alpha is not None and alpha.dtype != pixels.dtype:
        alpha = _to_uint8(alpha) if pixels.dtype == np.uint8 else alpha.astype(np.uint16) * 257
    image = image.with_pixels(pixels, alpha)
    if pixels.dtype == np.uint16:
        return _encode_sixteen_bit(image, fmt), notes
    return _encode_pil(image, fmt, quality), notes


def _encode_sixteen_bit(image: LoadedImage, fmt: str) -> bytes:
    import cv2

    arr = to_array(image, channel_order="bgr")
    ok, buf = cv2.imencode(".png" if fmt == "PNG" else ".tiff", arr)
    if not ok:
        raise ValueError(f"OpenCV could not encode a 16-bit {fmt}")
    return buf.tobytes()


def _encode_pil(image: LoadedImage, fmt: str, quality: int) -> bytes:
    from PIL import Image

    arr = to_array(image, channel_order="rgb")
    pil = Image.fromarray(arr)
    options: dict = {}
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = quality
    if fmt == "JPEG":
        options["subsampling"] = 0 if quality >= 90 else 2
    if image.exif and fmt in ("JPEG", "PNG", "WEBP"):
        options["exif"] = image.exif
    if image.icc_profile and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        options["icc_profile"] = image.icc_profile
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_image(
    path: str | os.PathLike, image: LoadedImage, *, quality: int = 95, overwrite: bool = False
) -> list[str]:
    """Atomically write ``image`` to ``path`` (format from the extension); returns notes on losses.

    With ``overwrite=False`` an existing file is never replaced (ImageWriteError).
    """
    from iqpfr.utils.fs import atomic_write_bytes

    path = Path(path)
    try:
        fmt = format_for_suffix(path)
        data, notes = encode_image(image, fmt, quality=quality)
        atomic_write_bytes(path, data, overwrite=overwrite)
    except FileExistsError:
        raise ImageWriteError(path, "exists (refusing to overwrite; pass overwrite=True / --overwrite)") from None
    except (OSError, ValueError) as exc:
        raise ImageWriteError(path, str(exc)) from None
    return notes


def write_rgb(path: str | os.PathLike, img: np.ndarray, *, overwrite: bool = False, jpeg_quality: int = 95) -> Path:
    """Atomically write a uint8 RGB (H, W, 3) array, format from the suffix (PNG is lossless).

    Without ``overwrite`` an existing file is kept and FileExistsError raised.
    """
    from PIL import Image

    from iqpfr.utils.fs import atomic_write_bytes

    path = Path(path)
    fmt = format_for_suffix(path)
    options = {"quality": jpeg_quality} if fmt == "JPEG" else {}
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buffer, format=fmt, **options)
    atomic_write_bytes(path, buffer.getvalue(), overwrite=overwrite)
    return path
