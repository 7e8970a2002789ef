"""Colour correction of a restored face towards its input crop, and monochrome photos (gray or tinted).

Both functions work in float32 on [0, 1] images, so there is no uint8 overflow (CodeFormer#222:
AdaIN on "grayscale" inputs produced black faces) and a flat channel (std ~ 0) is handled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOR_FIXES = ("none", "adain", "wavelet")


def adain_color_fix(restored: np.ndarray, reference: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Match each channel's mean and std of ``restored`` to ``reference``.

    restored, reference: (H, W, C) float32 in [0, 1] (sizes may differ). Returns (H, W, C) in [0, 1].
    """
    restored = restored.astype(np.float32)
    reference = reference.astype(np.float32)
    r_mean, r_std = restored.mean((0, 1)), restored.std((0, 1))
    t_mean, t_std = reference.mean((0, 1)), reference.std((0, 1))
    # a flat restored channel has no contrast to rescale: only shift it
    gain = np.where(r_std > eps, t_std / np.maximum(r_std, eps), 1.0)
    return np.clip((restored - r_mean) * gain + t_mean, 0.0, 1.0)


def _low_pass(image: np.ndarray, levels: int) -> np.ndarray:
    """Coarse part of an a-trous (dilated 3x3 binomial) wavelet decomposition."""
    import cv2

    low = image
    for level in range(levels):
        step = 2**level
        size = 2 * step + 1
        kernel1d = np.zeros(size, np.float32)
        kernel1d[[0, step, 2 * step]] = (0.25, 0.5, 0.25)
        low = cv2.sepFilter2D(low, -1, kernel1d, kernel1d, borderType=cv2.BORDER_REFLECT101)
    return low


def wavelet_color_fix(restored: np.ndarray, reference: np.ndarray, levels: int = 5) -> np.ndarray:
    """Keep the restored face's detail (high frequencies) and the input's colour (low frequencies).

    restored, reference: (H, W, C) float32 in [0, 1]; ``reference`` is resized to ``restored``.
    """
    import cv2

    restored = restored.astype(np.float32)
    reference = reference.astype(np.float32)
    if reference.shape[:2] != restored.shape[:2]:
        reference = cv2.resize(reference, restored.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        if reference.ndim == 2:
            reference = reference[:, :, None]
    detail = restored - _low_pass(restored, levels).reshape(restored.shape)
    colour = _low_pass(reference, levels).reshape(restored.shape)
    return np.clip(detail + colour, 0.0, 1.0)


def color_fix(restored: np.ndarray, reference: np.ndarray, method: str = "none") -> np.ndarray:
    """Dispatch on ``method`` in ``COLOR_FIXES``."""
    if method == "none":
        return restored
    if method == "adain":
        return adain_color_fix(restored, reference)
    if method == "wavelet":
        return wavelet_color_fix(restored, reference)
    raise ValueError(f"unknown colour fix {method!r}; choose one of {', '.join(COLOR_FIXES)}")


# BT.601 luma and the scale of its colour-difference axes (Cb, Cr)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_CB_SCALE, _CR_SCALE = 0.564, 0.713


def _as_levels(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 / uint16 / float [0, 1] -> float32 in 8-bit levels, sampled to <= ~256x256."""
    sample = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256)].astype(np.float32)
    if rgb.dtype == np.uint16:
        return sample / 257.0
    if np.issubdtype(rgb.dtype, np.floating):
        return sample * 255.0
    return sample


@dataclass(frozen=True)
class ToneCurve:
    """Colour of a monochrome photo as a function of brightness: Cb and Cr (8-bit levels) as quadratics
    ``c0 + c1 y + c2 y^2`` of the luma y in [0, 1]. A gray photo has all coefficients ~0; a sepia or
    cyanotype print has a smooth non-zero curve. ``residual``: RMS distance (levels) of the photo's
    pixels from the curve, small for any monochrome photo and large for colour ones."""

    cb: tuple[float, float, float]
    cr: tuple[float, float, float]
    residual: float


def fit_tone_curve(rgb: np.ndarray) -> ToneCurve:
    """Least-squares ToneCurve of an (H, W, 3) RGB image (uint8, uint16 or float in [0, 1])."""
    pixels = _as_levels(rgb).reshape(-1, 3)
    luma = pixels @ _LUMA
    cb = (pixels[:, 2] - luma) * _CB_SCALE
    cr = (pixels[:, 0] - luma) * _CR_SCALE
    y = luma / 255.0
    basis = np.stack([np.ones_like(y), y, y * y], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(basis, np.stack([cb, cr], axis=1).astype(np.float64), rcond=None)
    residual = float(np.sqrt(np.mean(np.sum((np.stack([cb, cr], 1) - basis @ coef) ** 2, axis=1))))
    return ToneCurve(tuple(float(c) for c in coef[:, 0]), tuple(float(c) for c in coef[:, 1]), residual)


def monochrome_tone(rgb: np.ndarray, threshold: float = 2.5) -> ToneCurve | None:
    """The photo's ToneCurve when it is monochrome (gray or uniformly tinted), else None.

    threshold: largest ``residual`` (8-bit levels) of a monochrome photo. Measured (round numbers):
    gray photos 0-0.1, a sepia print 1.8, the least colourful colour faces of FFHQ / CodeFormer's test
    crops 5.9 / 4.3, a faded colour print 11.7.
    """
    curve = fit_tone_curve(rgb)
    return curve if curve.residual <= threshold else None


def looks_grayscale(rgb: np.ndarray, threshold: float = 2.5) -> bool:
    """True when an (H, W, 3) RGB image is monochrome: gray, or one tint throughout (sepia)."""
    return monochrome_tone(rgb, threshold) is not None


def apply_tone(rgb: np.ndarray, curve: ToneCurve) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] -> its luma, coloured by ``curve`` (a gray curve gives gray)."""
    luma = np.clip(rgb.astype(np.float32) @ _LUMA, 0.0, 1.0)
    powers = np.stack([np.ones_like(luma), luma, luma * luma], axis=-1)
    cb = powers @ np.asarray(curve.cb, np.float32) / (255.0 * _CB_SCALE)  # = B - Y
    cr = powers @ np.asarray(curve.cr, np.float32) / (255.0 * _CR_SCALE)  # = R - Y
    red, blue = luma + cr, luma + cb
    green = (luma - _LUMA[0] * red - _LUMA[2] * blue) / _LUMA[1]
    return np.clip(np.stack([red, green, blue], axis=-1), 0.0, 1.0)


def to_gray3(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB -> BT.601 luma replicated to 3 channels."""
    luma = rgb @ _LUMA
    return np.repeat(luma[:, :, None], 3, axis=2)
