"""Colour metrics for face colour enhancement: CIEDE2000 and the Hasler-Suesstrunk colourfulness."""

from __future__ import annotations

import numpy as np


def lab(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB (uint8, or float in [0, 1]) -> (3, H*W) CIELab (D65; L in [0, 100])."""
    import torch

    from iqpfr.quality.colour import srgb_to_lab

    x = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]
    return srgb_to_lab(t)[0].reshape(3, -1).numpy()


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 of CIELab values (3, N) and (3, N) -> (N,) (Sharma, Wu, Dalal 2005)."""
    # one implementation in the project: the underwater task's (same formulas, tested against Sharma's table)
    from iqpfr.tasks.underwater.evaluate import delta_e_2000 as de

    return de(np.asarray(lab1, np.float64), np.asarray(lab2, np.float64))


def ciede2000(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean CIEDE2000 between two (H, W, 3) RGB images; ``mask`` (H, W) >= 0 weights the pixels."""
    if pred.shape != gt.shape:
        raise ValueError(f"images differ in size: {pred.shape} vs {gt.shape}")
    d = delta_e_2000(lab(pred), lab(gt))
    if mask is None:
        return float(d.mean())
    w = np.asarray(mask, np.float64).reshape(-1)
    return float((d * w).sum() / max(w.sum(), 1e-12))


def colourfulness(image: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M of an (H, W, 3) RGB image on the 0-255 scale.

    rg = R - G, yb = (R + G) / 2 - B; M = sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2).
    0 for a gray image; about 33 "moderately", 59 "quite", 82 "highly colourful" in the paper.
    """
    x = image.astype(np.float64)
    if image.dtype != np.uint8:
        x = x * 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
