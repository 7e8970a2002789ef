"""Image reading/writing: depth, alpha, gray, EXIF orientation, odd modes and one-line errors."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from iqpfr.io import (
    ImageReadError,
    ImageWriteError,
    LoadedImage,
    from_array,
    image_files,
    read_image,
    to_array,
    write_image,
)


def _gradient(h=24, w=32, dtype=np.uint8) -> np.ndarray:
    top = 65535 if dtype == np.uint16 else 255
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x / (w - 1), y / (h - 1), (x + y) / (w + h - 2)], axis=2)
    return np.round(rgb * top).astype(dtype)


def png_header_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_rgba_png_round_trip_keeps_alpha(tmp_path):
    rgb = _gradient()
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.pixels.dtype == np.uint8 and not image.gray
    np.testing.assert_array_equal(image.pixels, rgb)
    np.testing.assert_array_equal(image.alpha, alpha)
    write_image(tmp_path / "b.png", image)
    back = np.asarray(Image.open(tmp_path / "b.png"))
    assert back.shape[2] == 4
    np.testing.assert_array_equal(back[:, :, 3], alpha)


def test_sixteen_bit_rgb_png_keeps_every_bit(tmp_path):
    rgb16 = _gradient(dtype=np.uint16) | 1  # odd values: lost by any 8-bit detour
    cv2.imwrite(str(tmp_path / "a.png"), rgb16[:, :, ::-1])
    image = read_image(tmp_path / "a.png")
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels, rgb16)
    write_image(tmp_path / "b.png", image)
    back = cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[:, :, ::-1], rgb16)


def test_sixteen_bit_gray_and_rgba(tmp_path):
    gray16 = (_gradient(dtype=np.uint16)[:, :, 0] | 1).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), gray16)
    image = read_image(tmp_path / "g.png")
    assert image.gray and image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels[:, :, 1], gray16)
    write_image(tmp_path / "g2.tif", image)
    back = cv2.imread(str(tmp_path / "g2.tif"), cv2.IMREAD_UNCHANGED)
    assert back.ndim == 2 and back.dtype == np.uint16
    np.testing.assert_array_equal(back, gray16)

    bgra = np.dstack([_gradient(dtype=np.uint16), np.full(gray16.shape, 40000, np.uint16)])
    cv2.imwrite(str(tmp_path / "c.png"), bgra)
    image = read_image(tmp_path / "c.png")
    assert image.alpha is not None and image.alpha.dtype == np.uint16 and int(image.alpha[0, 0]) == 40000


def test_gray_jpeg_stays_gray(tmp_path):
    Image.fromarray(_gradient()[:, :, 0]).save(tmp_path / "g.jpg", quality=95)
    image = read_image(tmp_path / "g.jpg")
    assert image.gray and image.pixels.shape[2] == 3
    write_image(tmp_path / "out.jpg", image)
    assert Image.open(tmp_path / "out.jpg").mode == "L"


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_matches_pil(tmp_path, orientation):
    source = Image.fromarray(_gradient(20, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    source.save(tmp_path / "o.png", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")).convert("RGB"))
    image = read_image(tmp_path / "o.png")
    np.testing.assert_array_equal(image.pixels, expected)
    assert any("orientation" in note for note in image.notes)
    # written back upright, with the orientation tag reset so viewers do not rotate it twice
    write_image(tmp_path / "o2.png", image)
    assert Image.open(tmp_path / "o2.png").getexif().get(0x0112, 1) == 1


def test_palette_cmyk_and_animated_are_converted_with_notes(tmp_path):
    palette = Image.fromarray(_gradient()).convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    image = read_image(tmp_path / "p.png")
    assert image.alpha is not None and any("palette" in n for n in image.notes)

    Image.fromarray(_gradient()).convert("CMYK").save(tmp_path / "c.jpg")
    image = read_image(tmp_path / "c.jpg")
    assert image.pixels.shape[2] == 3 and any("CMYK" in n for n in image.notes)

    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    image = read_image(tmp_path / "anim.webp")
    assert any("2 frames" in n for n in image.notes)
    assert abs(int(image.pixels[8, 8, 0]) - 10) <= 2


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.png", b"", "empty file"),
        ("text.jpg", b"this is not an image at all", "not an image"),
        ("bomb.png", None, "decompression"),
        ("cut.png", None, "truncated"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    if name == "bomb.png":
        content = png_header_bomb(100_000, 100_000)
    if name == "cut.png":
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and reason in message


def test_missing_and_directory_errors(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path / "dir.png")


def test_max_pixels_guard(tmp_path):
    Image.fromarray(_gradient(100, 100)).save(tmp_path / "a.png")
    with pytest.raises(ImageReadError, match="MP limit"):
        read_image(tmp_path / "a.png", max_pixels=5000)


def test_write_never_overwrites_unless_asked(tmp_path):
    image = LoadedImage(pixels=_gradient())
    target = tmp_path / "x.png"
    target.write_bytes(b"precious")
    with pytest.raises(ImageWriteError, match="exists"):
        write_image(target, image)
    assert target.read_bytes() == b"precious"
    write_image(target, image, overwrite=True)
    assert np.array_equal(np.asarray(Image.open(target)), image.pixels)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary files left behind


def test_lossy_targets_report_what_they_drop(tmp_path):
    alpha = np.full((24, 32), 128, np.uint8)
    notes = write_image(tmp_path / "a.jpg", LoadedImage(pixels=_gradient(), alpha=alpha))
    assert any("alpha" in n for n in notes)
    notes = write_image(tmp_path / "b.jpg", LoadedImage(pixels=_gradient(dtype=np.uint16)))
    assert any("8 bits" in n for n in notes)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_array_round_trip(dtype, order):
    base = _gradient(dtype=np.uint16).astype(np.float32) / 65535.0
    array = base.astype(dtype) if dtype == np.float32 else np.round(base * np.iinfo(dtype).max).astype(dtype)
    image = from_array(array, channel_order=order)
    back = to_array(image, channel_order=order, dtype=dtype)
    assert back.dtype == array.dtype
    np.testing.assert_allclose(back.astype(np.float64), array.astype(np.float64), atol=1e-4 if dtype == np.float32 else 0)
    if order == "bgr":  # the stored pixels are RGB
        np.testing.assert_array_equal(image.pixels[:, :, 0], from_array(array[:, :, ::-1]).pixels[:, :, 0])


def test_image_files_any_case_extension(tmp_path):
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.webp", "e.TIFF", "f.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.bmp").write_bytes(b"x")
    assert [p.name for p in image_files(tmp_path)] == ["a.JPG", "b.jpeg", "c.Png", "d.webp", "e.TIFF"]
    assert "g.bmp" in [p.name for p in image_files(tmp_path, recursive=True)]


def test_one_bit_tiff_and_bmp_alpha(tmp_path):
    Image.fromarray(_gradient()[:, :, 0] > 100).save(tmp_path / "bw.tiff", compression="group4")
    image = read_image(tmp_path / "bw.tiff")
    assert image.gray and image.exif is None  # a TIFF's IFD0 is not carried as EXIF
    write_image(tmp_path / "bw2.tiff", image)
    assert Image.open(tmp_path / "bw2.tiff").mode == "L"
    notes = write_image(tmp_path / "a.bmp", LoadedImage(pixels=_gradient(), alpha=np.zeros((24, 32), np.uint8)))
    assert any("alpha" in n for n in notes)
