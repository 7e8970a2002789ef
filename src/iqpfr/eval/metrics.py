"""Full-reference pixel metrics: PSNR and SSIM on 8-bit images, with explicit conventions.

Inputs are uint8 RGB arrays (H, W, 3) of equal shape. Conventions (``channel``):

- ``"rgb"``: all three 8-bit channels (PSNR: one MSE over every channel value; SSIM: the mean of the
  three per-channel SSIMs, as BasicSR ``calculate_ssim`` without ``test_y_channel``).
- ``"gray"``: 8-bit luma ``round(0.299 R + 0.587 G + 0.114 B)`` (ITU-R BT.601 weights; what PIL
  ``convert("L")`` and MATLAB ``rgb2gray`` give). **The default for SSIM**; it reproduces the
  reference values of the calibration set (pyiqa ResultsCalibra) to 4 decimals.
- ``"y"``: the float Y channel of BT.601 studio-swing YCbCr, ``16 + (65.481 R + 128.553 G +
  24.966 B) / 255`` (MATLAB ``rgb2ycbcr``; BasicSR ``test_y_channel=True``), not rounded.

SSIM follows Wang et al. 2004 exactly as the reference MATLAB ``ssim_index``: 11x11 Gaussian window
with sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, local statistics with 1/N normalisation, averaged over
the *valid* region only (5-pixel margins dropped, no padding; identical to scikit-image
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255)``), and no down-sampling. ``crop_border`` removes extra pixels on each side first
(BasicSR's ``crop_border``); the default is 0.
"""

from __future__ import annotations

import numpy as np

CHANNELS = ("rgb", "gray", "y")
_LUMA = np.array([0.299, 0.587, 0.114])
_YCBCR_Y = np.array([65.481, 128.553, 24.966]) / 255.0


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    for img in (a, b):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected uint8 RGB (H, W, 3) arrays, got {img.dtype} {img.shape}")
    if a.shape != b.shape:
        raise ValueError(f"image sizes differ: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")


def convert_channels(img: np.ndarray, channel: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float64 (H, W, C) in the 0..255 scale of convention ``channel``."""
    x = img.astype(np.float64)
    if channel == "rgb":
        return x
    if channel == "gray":
        return np.round(x @ _LUMA)[..., None]
    if channel == "y":
        return (16.0 + x @ _YCBCR_Y)[..., None]
    raise ValueError(f"unknown channel convention {channel!r}; choose from {CHANNELS}")


def _crop(x: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return x
    if 2 * border >= min(x.shape[:2]):
        raise ValueError(f"crop_border {border} leaves nothing of a {x.shape[1]}x{x.shape[0]} image")
    return x[border:-border, border:-border]


def psnr(pred: np.ndarray, gt: np.ndarray, *, channel: str = "rgb", crop_border: int = 0) -> float:
    """PSNR in dB (peak 255) between two uint8 RGB images; ``inf`` for identical images."""
    _check_pair(pred, gt)
    a = _crop(convert_channels(pred, channel), crop_border)
    b = _crop(convert_channels(gt, channel), crop_border)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian taps; the 2-D SSIM window is their outer product."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D array with ``taps`` along both axes."""
    from numpy.lib.stride_tricks import sliding_window_view

    k = len(taps)
    rows = sliding_window_view(x, k, axis=0) @ taps  # (H-k+1, W)
    return sliding_window_view(rows, k, axis=1) @ taps  # (H-k+1, W-k+1)


def ssim_map(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> np.ndarray:
    """Local SSIM of two float 2-D arrays over the valid region ((H-10) x (W-10))."""
    taps = gaussian_window_1d()
    if min(a.shape) < len(taps):
        raise ValueError(f"image too small for the 11x11 SSIM window: {a.shape[1]}x{a.shape[0]}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a**2
    var_b = _filter_valid(b * b, taps) - mu_b**2
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(pred: np.ndarray, gt: np.ndarray, *, channel: str = "gray", crop_border: int = 0) -> float:
    """SSIM in [-1, 1] (1 = identical) between two uint8 RGB images; see the module docstring."""
    _check_pair(pred, gt)
    a = _crop(convert_channels(pred, channel), crop_border)
    b = _crop(convert_channels(gt, channel), crop_border)
    return float(np.mean([ssim_map(a[..., c], b[..., c]).mean() for c in range(a.shape[2])]))
