"""Evaluation of underwater enhancement on held-out pairs: metrics, baselines, quality sweep, seams.

Methods compared: ``input`` (unchanged), ``gray-world`` (per-channel gains to a common mean),
``clahe-L`` (OpenCV CLAHE, clip 2.0, 8x8 tiles, on L of Lab), and the model at its default q.
Metrics (all on 8-bit RGB as saved): PSNR (dB, RGB), SSIM (mean over RGB channels, Gaussian 11x11,
:mod:`iqpfr.eval.metrics`), CIEDE2000 (mean over pixels, CIELab D65), UIQM and UCIQE
(:mod:`iqpfr.quality`). The sweep runs the model at several q; Spearman's rho between q and the
mean output UIQM / UCIQE (and per image, median) says whether the control works.
"""

from __future__ import annotations

import numpy as np
import torch


def gray_world(rgb: np.ndarray) -> np.ndarray:
    """Gray-world white balance of uint8 RGB (H, W, 3): every channel scaled to the mean of the three."""
    x = rgb.astype(np.float64)
    means = x.reshape(-1, 3).mean(0)
    x = x * (means.mean() / np.maximum(means, 1e-6))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def clahe_l(rgb: np.ndarray, clip: float = 2.0, grid: int = 8) -> np.ndarray:
    """CLAHE on the L channel of OpenCV's 8-bit Lab (clip 2.0, 8x8 tiles), uint8 RGB in and out."""
    import cv2

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def ciede2000(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference of two uint8 RGB images (Sharma, Wu, Dalal 2005 formulas)."""
    from iqpfr.quality.colour import srgb_to_lab

    def lab(x):
        t = torch.from_numpy(x.astype(np.float64) / 255.0).permute(2, 0, 1)[None]
        return srgb_to_lab(t)[0].reshape(3, -1).numpy()

    return float(delta_e_2000(lab(a), lab(b)).mean())


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 of CIELab values (3, N) and (3, N) -> (N,)."""
    l1, a1, b1 = lab1
    l2, a2, b2 = lab2
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    cbar = (c1 + c2) / 2
    g = 0.5 * (1 - np.sqrt(cbar**7 / (cbar**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dlp, dcp = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(c1p * c2p == 0, 0, np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)))
    dhp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    lbar, cbarp = (l1 + l2) / 2, (c1p + c2p) / 2
    hsum = h1p + h2p
    hbar = np.where(c1p * c2p == 0, hsum,
                    np.where(np.abs(h1p - h2p) <= 180, hsum / 2, np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2)))
    t = (1 - 0.17 * np.cos(np.radians(hbar - 30)) + 0.24 * np.cos(np.radians(2 * hbar))
         + 0.32 * np.cos(np.radians(3 * hbar + 6)) - 0.20 * np.cos(np.radians(4 * hbar - 63)))
    dtheta = 30 * np.exp(-(((hbar - 275) / 25) ** 2))
    rc = 2 * np.sqrt(cbarp**7 / (cbarp**7 + 25.0**7))
    sl = 1 + 0.015 * (lbar - 50) ** 2 / np.sqrt(20 + (lbar - 50) ** 2)
    sc, sh = 1 + 0.045 * cbarp, 1 + 0.015 * cbarp * t
    rt = -np.sin(np.radians(2 * dtheta)) * rc
    return np.sqrt((dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhp / sh) ** 2 + rt * (dcp / sc) * (dhp / sh))


def no_reference_scores(rgb: np.ndarray) -> dict[str, float]:
    """UIQM and UCIQE of a uint8 RGB image."""
    from iqpfr.quality.uciqe import UCIQE
    from iqpfr.quality.uiqm import UIQM

    t = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        return {"uiqm": float(UIQM()(t)), "uciqe": float(UCIQE()(t))}


def full_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM, CIEDE2000 against ``gt`` plus UIQM and UCIQE of ``pred`` (uint8 RGB, same size)."""
    from iqpfr.eval.metrics import psnr, ssim

    return {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt, channel="rgb"), "ciede2000": ciede2000(pred, gt),
            **no_reference_scores(pred)}


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    value = spearmanr(x, y)[0]
    return float(value) if np.isfinite(value) else float("nan")
