"""Differentiable sRGB <-> CIELab (D65) for batched torch images, shared by the underwater scorers,
the colour metrics and the colour transfer of face colour enhancement.

``srgb_to_lab(x)``: x (B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) with L in [0, 100] and a, b in
about [-128, 127], the CIE 1976 formulas with the sRGB (IEC 61966-2-1) linearisation and the D65
white (0.95047, 1, 1.08883), as in scikit-image's ``rgb2lab`` and the CIEDE2000 evaluation.
"""

from __future__ import annotations

import torch

# sRGB linear -> XYZ (D65), IEC 61966-2-1
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
D65_WHITE = (0.95047, 1.0, 1.08883)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB gamma in [0, 1] -> linear light (same shape)."""
    return torch.where(x > 0.04045, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, x / 12.92)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear light -> sRGB gamma (same shape; values outside [0, 1] are clipped first)."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x > 0.0031308, 1.055 * x.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055, 12.92 * x)


def srgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB [0, 1] -> CIELab (B, 3, H, W): L [0, 100], a/b about [-128, 127]."""
    lin = srgb_to_linear(x)
    m = torch.tensor(_RGB_TO_XYZ, dtype=x.dtype, device=x.device)
    white = torch.tensor(D65_WHITE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,bjhw->bihw", m, lin) / white
    eps = 216.0 / 24389.0  # (6/29)^3
    kappa = 24389.0 / 27.0
    # clamp inside the root so its gradient stays finite at 0
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1.0 / 3.0), (kappa * xyz + 16.0) / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    lum = 116.0 * fy - 16.0
    return torch.stack([lum, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELab (B, 3, H, W) -> sRGB (B, 3, H, W) in [0, 1] (clipped): the inverse of ``srgb_to_lab`` in gamut."""
    m = torch.linalg.inv(torch.tensor(_RGB_TO_XYZ, dtype=lab.dtype, device=lab.device))
    white = torch.tensor(D65_WHITE, dtype=lab.dtype, device=lab.device).view(1, 3, 1, 1)
    fy = (lab[:, 0] + 16.0) / 116.0
    f = torch.stack([fy + lab[:, 1] / 500.0, fy, fy - lab[:, 2] / 200.0], dim=1)
    eps, kappa = 216.0 / 24389.0, 24389.0 / 27.0
    xyz = torch.where(f ** 3 > eps, f ** 3, (116.0 * f - 16.0) / kappa) * white
    return linear_to_srgb(torch.einsum("ij,bjhw->bihw", m, xyz))
