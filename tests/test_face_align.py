"""Alignment: similarity estimation, template scaling, and the align -> inverse-warp round trip."""

from __future__ import annotations

import numpy as np
import pytest

from iqpfr.face.align import (
    FFHQ_TEMPLATE_512,
    MEAN_LANDMARKS_68_512,
    alignment_affine,
    estimate_similarity,
    landmarks5_from_68,
    template_for,
    transform_points,
    warp_face,
)
from iqpfr.face.paste import inverse_affine


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rot, [[tx], [ty]]])


def test_estimate_similarity_recovers_a_known_transform():
    truth = _similarity(17.0, 0.37, 40.0, -12.5)
    src = FFHQ_TEMPLATE_512 + np.random.default_rng(0).normal(0, 3, FFHQ_TEMPLATE_512.shape)
    np.testing.assert_allclose(estimate_similarity(src, transform_points(src, truth)), truth, atol=1e-9)


def test_estimate_similarity_rejects_degenerate_points():
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), FFHQ_TEMPLATE_512)


def test_template_scales_with_model_resolution():
    np.testing.assert_allclose(template_for(512), FFHQ_TEMPLATE_512)
    t256 = template_for(256)
    # pixel-centre convention: the distance between the eyes halves exactly
    assert np.linalg.norm(t256[1] - t256[0]) == pytest.approx(np.linalg.norm(FFHQ_TEMPLATE_512[1] - FFHQ_TEMPLATE_512[0]) / 2)
    # our measured mean 68-point face agrees with the 5-point template within a few pixels
    assert np.abs(landmarks5_from_68(MEAN_LANDMARKS_68_512)[[0, 1, 3, 4]] - FFHQ_TEMPLATE_512[[0, 1, 3, 4]]).max() < 4


def _blobs(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    image = np.zeros(shape, np.float64)
    for px, py in points:
        image += np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma**2))
    return image


def _centroids(image: np.ndarray, guesses: np.ndarray, radius: float) -> np.ndarray:
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    found = []
    for gx, gy in guesses:
        window = ((x - gx) ** 2 + (y - gy) ** 2 <= radius**2) * image
        found.append([(window * x).sum() / window.sum(), (window * y).sum() / window.sum()])
    return np.array(found)


@pytest.mark.parametrize("size, angle, scale", [(512, 12.0, 0.55), (256, -25.0, 1.7), (64, 5.0, 0.3)])
def test_align_then_inverse_warp_returns_landmarks_within_half_a_pixel(size, angle, scale):
    # a photo whose 5 landmarks are the template under a random similarity (plus jitter)
    to_photo = _similarity(angle, scale * 512 / size, 150.0, 90.0)
    landmarks = transform_points(template_for(size), to_photo) + np.random.default_rng(1).normal(0, 0.3, (5, 2))
    sigma_crop = 1.5 * size / 64  # blobs stay well apart in the crop at every resolution
    shape = (int(landmarks[:, 1].max()) + 100, int(landmarks[:, 0].max()) + 100)
    photo = _blobs(landmarks, shape, sigma=sigma_crop * scale * 512 / size).astype(np.float32)
    affine = alignment_affine(landmarks, size)
    crop = warp_face(photo, affine, size, border="constant")
    # the crop's blobs sit on the template ...
    in_crop = _centroids(crop, transform_points(landmarks, affine), radius=3 * sigma_crop)
    # ... and mapping them back with the paste transform lands on the photo's landmarks
    back = transform_points(in_crop, inverse_affine(affine))
    assert np.abs(back - landmarks).max() < 0.5


def test_inverse_affine_follows_the_upscaled_canvas():
    import cv2

    landmarks = transform_points(template_for(128), _similarity(8.0, 0.6, 60.0, 40.0))
    photo = _blobs(landmarks, (160, 200), sigma=2.0).astype(np.float32)
    affine = alignment_affine(landmarks, 128)
    up = cv2.resize(photo, (400, 320), interpolation=cv2.INTER_CUBIC)
    expected = _centroids(up, landmarks * 2 + 0.5, radius=6)
    mapped = transform_points(template_for(128), inverse_affine(affine, 2.0))
    assert np.abs(mapped - expected).max() < 0.5


def test_landmarks5_from_68_uses_eye_centres():
    points = MEAN_LANDMARKS_68_512
    five = landmarks5_from_68(points)
    np.testing.assert_allclose(five[0], points[36:42].mean(0))
    np.testing.assert_allclose(five[4], points[54])
