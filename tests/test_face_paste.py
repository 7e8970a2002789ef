"""Paste-back: the soft mask, no seam at the crop border, alpha/16-bit survival, colour fixes."""

from __future__ import annotations

import numpy as np
import pytest

from iqpfr.face.align import MEAN_LANDMARKS_68_512, alignment_affine, template_for, transform_points
from iqpfr.face.color import adain_color_fix, looks_grayscale, wavelet_color_fix
from iqpfr.face.paste import border_window, inverse_affine, paste_face, soft_face_mask
from iqpfr.face.pipeline import FaceRecord, paste_faces, to_float
from iqpfr.io import LoadedImage


def _rotated_face_affine(size: int, centre=(160.0, 120.0), eye_distance=60.0, angle_deg=20.0) -> np.ndarray:
    """Image -> crop affine of a face at ``centre`` tilted by ``angle_deg``."""
    template = template_for(size)
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    scale = eye_distance / np.linalg.norm(template[1] - template[0])
    landmarks = (template - template.mean(0)) @ rot.T * scale + centre
    return alignment_affine(landmarks, size)


def test_mask_is_one_on_the_face_and_zero_at_the_crop_border():
    mask = soft_face_mask(256)
    assert mask.dtype == np.float32 and mask.shape == (256, 256)
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert mask[150, 128] > 0.99  # the nose
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert border.max() == 0.0
    # the edge is soft: between the face and the border, values pass through the middle gradually
    row = mask[150]
    assert ((row > 0.05) & (row < 0.95)).sum() >= 8


def test_mask_follows_the_given_landmarks():
    size = 256
    points = template_for(size, MEAN_LANDMARKS_68_512)
    narrow = points.copy()
    narrow[:, 0] = (narrow[:, 0] - size / 2) * 0.6 + size / 2
    assert soft_face_mask(size, narrow).sum() < 0.8 * soft_face_mask(size, points).sum()


def test_border_window_is_smooth():
    window = border_window(128)
    assert window[0].max() == 0 and window[64, 64] == 1.0
    steps = np.abs(np.diff(window[64]))
    assert steps.max() < 0.2


def _crop_border_step(canvas: np.ndarray, crop_to_canvas: np.ndarray, size: int) -> float:
    """Largest change across the crop's square outline in the canvas (sampled on both sides)."""
    import cv2

    t = np.linspace(0, size - 1, 200)
    edges = [
        (np.stack([t, np.zeros_like(t)], 1), (0, -1)),
        (np.stack([t, np.full_like(t, size - 1)], 1), (0, 1)),
        (np.stack([np.zeros_like(t), t], 1), (-1, 0)),
        (np.stack([np.full_like(t, size - 1), t], 1), (1, 0)),
    ]
    worst = 0.0
    scale = np.sqrt(abs(np.linalg.det(crop_to_canvas[:, :2])))
    for points, normal in edges:
        step = np.array(normal, np.float64) * 1.5 / scale  # 1.5 canvas pixels either side
        inside = transform_points(points - step, crop_to_canvas).astype(np.float32)
        outside = transform_points(points + step, crop_to_canvas).astype(np.float32)
        sample = lambda p: cv2.remap(canvas, p[:, None, 0], p[:, None, 1], cv2.INTER_LINEAR)[:, 0]  # noqa: E731
        worst = max(worst, float(np.abs(sample(inside) - sample(outside)).max()))
    return worst


@pytest.mark.parametrize("upscale", [1.0, 2.0])
def test_paste_has_no_hard_edge_at_the_crop_border(upscale):
    size = 128
    affine = _rotated_face_affine(size)
    canvas = np.zeros((int(240 * upscale), int(320 * upscale)), np.float32)
    white = np.ones((size, size, 1), np.float32)
    crop_to_canvas = inverse_affine(affine, upscale)
    paste_face(canvas[:, :, None], white, crop_to_canvas, soft_face_mask(size))
    assert canvas.max() > 0.99  # the face is there
    assert _crop_border_step(canvas, crop_to_canvas, size) < 0.01
    # and a plain square paste would have shown a full step there: the measure can fail
    square = np.zeros_like(canvas)
    paste_face(square[:, :, None], white, crop_to_canvas, np.ones((size, size), np.float32))
    assert _crop_border_step(square, crop_to_canvas, size) > 0.5
    # no hard edge anywhere: neighbouring pixels differ by a fraction of the face contrast
    assert max(np.abs(np.diff(canvas, axis=0)).max(), np.abs(np.diff(canvas, axis=1)).max()) < 0.1


def _record(image: LoadedImage, size: int, restored_value: float) -> FaceRecord:
    from iqpfr.face.align import warp_face

    affine = _rotated_face_affine(size, centre=(image.size[0] / 2, image.size[1] / 2), eye_distance=30.0)
    crop = to_float(warp_face(image.pixels, affine, size))
    record = FaceRecord(0, np.array([0, 0, 1, 1.0]), 1.0, np.zeros((5, 2)), affine, crop)
    record.restored = np.full((size, size, 3), restored_value, np.float32)
    return record


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_paste_keeps_alpha_depth_and_untouched_pixels(dtype):
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, top, (120, 160, 3)).astype(dtype)
    alpha = rng.integers(0, top, (120, 160)).astype(dtype)
    image = LoadedImage(pixels=pixels, alpha=alpha)
    out = paste_faces(image, [_record(image, 64, 0.5)], grayscale="off")
    assert out.pixels.dtype == dtype and out.alpha.dtype == dtype
    np.testing.assert_array_equal(out.alpha, alpha)
    changed = np.any(out.pixels != pixels, axis=2)
    assert changed[60, 80] and not changed[0, 0] and not changed[-1, -1]
    assert abs(int(out.pixels[60, 80, 0]) - top // 2) <= top * 0.02
    assert np.array_equal(image.pixels, pixels)  # the input is untouched

    big = paste_faces(image, [_record(image, 64, 0.5)], upscale=2.0, grayscale="off")
    assert big.pixels.shape == (240, 320, 3) and big.alpha.shape == (240, 320)


def test_gray_photo_gets_gray_faces():
    gray = np.repeat(np.random.default_rng(0).integers(0, 255, (80, 80, 1)).astype(np.uint8), 3, axis=2)
    image = LoadedImage(pixels=gray, gray=True)
    record = _record(image, 64, 0.0)
    record.restored[:, :, 0] = 1.0  # a red face
    out = paste_faces(image, [record])
    assert looks_grayscale(out.pixels)


def test_adain_matches_statistics_without_overflow():
    rng = np.random.default_rng(0)
    restored = rng.random((32, 32, 3)).astype(np.float32)
    reference = (rng.random((40, 40, 3)) * 0.2 + 0.7).astype(np.float32)
    fixed = adain_color_fix(restored, reference)
    np.testing.assert_allclose(fixed.mean((0, 1)), reference.mean((0, 1)), atol=0.02)
    flat = adain_color_fix(np.full((8, 8, 3), 0.5, np.float32), np.full((8, 8, 3), 0.9, np.float32))
    assert np.isfinite(flat).all() and np.allclose(flat, 0.9)  # CodeFormer#222: no black faces


def test_wavelet_keeps_detail_and_takes_colour():
    rng = np.random.default_rng(0)
    detail = (rng.random((64, 64, 3)).astype(np.float32) - 0.5) * 0.1
    restored = np.clip(0.3 + detail, 0, 1)
    reference = np.full((64, 64, 3), (0.8, 0.5, 0.2), np.float32)
    fixed = wavelet_color_fix(restored, reference)
    np.testing.assert_allclose(fixed.mean((0, 1)), (0.8, 0.5, 0.2), atol=0.02)
    assert np.corrcoef(fixed[:, :, 0].ravel(), restored[:, :, 0].ravel())[0, 1] > 0.5


def _sepia(gray01: np.ndarray) -> np.ndarray:
    """A sepia print of a [0, 1] luma image (a warm tint that fades to white), as uint8 RGB."""
    tint = np.array([1.07, 0.98, 0.82], np.float32)
    rgb = gray01[:, :, None] * tint + (1 - tint) * gray01[:, :, None] ** 2
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def test_monochrome_tone_detects_gray_and_sepia_but_not_colour():
    from iqpfr.face.color import fit_tone_curve, monochrome_tone

    rng = np.random.default_rng(0)
    luma = np.clip(rng.random((96, 96)) * 0.5 + np.linspace(0.1, 0.5, 96)[None], 0, 1).astype(np.float32)
    gray = np.repeat(np.round(luma * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    assert monochrome_tone(gray) is not None and fit_tone_curve(gray).residual < 0.1
    sepia = _sepia(luma)
    assert monochrome_tone(sepia) is not None and looks_grayscale(sepia)
    assert np.abs(sepia[:, :, 0].astype(int) - sepia[:, :, 2]).mean() > 10  # the old spread test called it colour
    colour = sepia.copy()
    colour[:48, :, 0] = colour[:48, :, 0] // 2  # a cyan half and a warm half: two tints, not one
    assert monochrome_tone(colour) is None and not looks_grayscale(colour)
    assert monochrome_tone(gray.astype(np.float32) / 255) is not None  # float images in [0, 1]
    assert monochrome_tone(gray.astype(np.uint16) * 257) is not None  # 16-bit images


def test_sepia_photo_keeps_its_tone():
    from iqpfr.face.color import apply_tone, fit_tone_curve

    luma = np.clip(np.random.default_rng(1).random((80, 80)) * 0.6 + 0.2, 0, 1).astype(np.float32)
    image = LoadedImage(pixels=_sepia(luma))
    record = _record(image, 64, 0.0)
    record.restored[:, :, 0] = 1.0  # a red face: the network's colours
    red = record.restored.copy()
    out = paste_faces(image, [record])
    expected = apply_tone(red[:1, :1], fit_tone_curve(image.pixels))[0, 0] * 255
    centre = out.pixels[40, 40].astype(np.float32)
    assert np.abs(centre - expected).max() <= 2.0, (centre, expected)
    assert centre[0] > centre[2] + 5 and centre[0] < 120  # warm like the print, not the restored red (255)
    record = _record(image, 64, 0.0)
    record.restored[:, :, 0] = 1.0
    off = paste_faces(image, [record], grayscale="off")  # the network's colours, untouched
    assert off.pixels[40, 40, 0] > 240 and off.pixels[40, 40, 2] < 15
