"""PSNR / SSIM: calibration against the published reference values and against direct formulas."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.signal import correlate2d

from conftest import shared_path
from iqpfr.eval.metrics import convert_channels, gaussian_window_1d, psnr, ssim
from iqpfr.io import read_rgb


def _reference_values():
    folder = shared_path("calibration")
    with open(folder / "reference_values.csv", newline="") as fh:
        rows = {row["metric"]: row for row in csv.DictReader(fh)}
    names = ["I03", "I04", "I06", "I08", "I19"]
    return folder, names, rows


def test_psnr_and_ssim_match_the_calibration_reference():
    folder, names, rows = _reference_values()
    for name in names:
        dist = read_rgb(folder / "dist_dir" / f"{name}.png")
        ref = read_rgb(folder / "ref_dir" / f"{name}.png")
        assert abs(psnr(dist, ref) - float(rows["psnr"][name])) < 0.01, name
        assert abs(ssim(dist, ref) - float(rows["ssim"][name])) < 0.002, name
        # the other conventions are genuinely different numbers (so the choice matters)
        assert abs(ssim(dist, ref, channel="y") - ssim(dist, ref)) > 1e-4 or name in ("I04", "I06", "I08")


def _direct_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook SSIM with a 2-D window and 'valid' correlation (independent of the separable code)."""
    w = np.outer(gaussian_window_1d(), gaussian_window_1d())
    f = lambda x: correlate2d(x, w, mode="valid")  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = f(a), f(b)
    s11, s22, s12 = f(a * a) - mu1**2, f(b * b) - mu2**2, f(a * b) - mu1 * mu2
    return float((((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))).mean())


@pytest.mark.parametrize("channel", ["gray", "y", "rgb"])
def test_ssim_equals_the_direct_formula(channel):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    ca, cb = convert_channels(a, channel), convert_channels(b, channel)
    expected = np.mean([_direct_ssim(ca[..., c], cb[..., c]) for c in range(ca.shape[2])])
    assert abs(ssim(a, b, channel=channel) - expected) < 1e-10


def test_psnr_formula_identity_and_crop():
    a = np.zeros((20, 20, 3), np.uint8)
    b = a.copy()
    assert psnr(a, b) == float("inf") and abs(ssim(a, b) - 1.0) < 1e-12
    b[0, 0, 0] = 255  # one channel value off by 255 -> MSE = 255^2 / 1200
    assert abs(psnr(a, b) - 10 * np.log10(1200)) < 1e-9
    assert psnr(a, b, crop_border=1) == float("inf")  # the corner pixel is cropped away


def test_bad_pairs_raise():
    with pytest.raises(ValueError, match="sizes differ"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        ssim(np.zeros((16, 16, 3), np.float32), np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="too small"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
