"""Colour correction of a restored face towards its input crop.

Both functions work in float32 on [0, 1] images, so there is no uint8 overflow (CodeFormer#222:
AdaIN on "grayscale" inputs produced black faces) and a flat channel (std ~ 0) is handled.
"""

from __future__ import annotations

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


def looks_grayscale(rgb: np.ndarray, threshold: float = 2.0) -> bool:
    """True when an (H, W, 3) RGB image has (almost) no colour: a gray photo stored as RGB.

    threshold: mean absolute channel difference, in 8-bit levels.
    """
    sample = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256)].astype(np.float32)
    if rgb.dtype == np.uint16:
        sample = sample / 257.0
    elif np.issubdtype(rgb.dtype, np.floating):
        sample = sample * 255.0
    spread = np.abs(sample[:, :, 0] - sample[:, :, 1]) + np.abs(sample[:, :, 1] - sample[:, :, 2])
    return float(spread.mean()) / 2.0 <= threshold


def to_gray3(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB -> BT.601 luma replicated to 3 channels."""
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(luma[:, :, None], 3, axis=2)
