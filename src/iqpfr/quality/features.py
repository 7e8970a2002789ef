"""Natural-scene-statistics building blocks shared by NIQE, PIQE and BRISQUE, in batched PyTorch.

Conventions follow the MATLAB reference releases, because that is what published NIQE / PIQE /
BRISQUE numbers come from:

- gray conversion: MATLAB ``rgb2gray`` weights (0.2989, 0.5870, 0.1140) on 8-bit values, rounded to
  integers as ``rgb2gray`` does for uint8 images. The rounding is a straight-through rounding: the
  forward value is rounded, the gradient is that of the unrounded value.
- local normalisation (MSCN): 7x7 Gaussian window with sigma 7/6, ``(I - mu) / (sigma + 1)`` on
  0..255 values, sigma = sqrt(|E[I^2] - mu^2|).
- down-scaling by 2: MATLAB ``imresize(I, 0.5)`` (bicubic, a = -0.5, antialiased, symmetric border),
  written as two weight matrices so it is differentiable and runs on any device.
- generalised Gaussian fits: the moment-matching estimators of Mittal et al. The shape parameter is
  read from the table gamma = 0.2:0.001:10 by linear interpolation (MATLAB takes the nearest grid
  point; the two differ by < 0.0005) so that it is differentiable too.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)  # MATLAB rgb2gray


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def rgb_to_gray255(images: torch.Tensor, *, quantize: bool = True) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) MATLAB-rgb2gray luminance in 0..255.

    ``quantize`` rounds 8-bit values (input and output) as MATLAB does for uint8 images.
    """
    x = images * 255.0
    if quantize:
        x = round_ste(x)
    w = torch.tensor(RGB2GRAY, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    gray = (x * w).sum(dim=1, keepdim=True)
    return round_ste(gray) if quantize else gray


@lru_cache(maxsize=8)
def _gaussian_window_cpu(size: int, sigma: float) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    win = torch.outer(g, g)
    return win / win.sum()


def gaussian_window(size: int = 7, sigma: float = 7 / 6, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """MATLAB ``fspecial('gaussian', size, sigma)``, normalised to sum 1: (size, size)."""
    win = _gaussian_window_cpu(size, sigma)
    if like is not None:
        win = win.to(dtype=like.dtype, device=like.device)
    return win


def filter2d(x: torch.Tensor, window: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """Correlate (B, 1, H, W) with a (k, k) window, same size out; padding 'replicate' or 'zeros'."""
    k = window.shape[-1]
    p = k // 2
    if padding == "replicate":
        x = F.pad(x, (p, p, p, p), mode="replicate")
        return F.conv2d(x, window.view(1, 1, k, k))
    if padding == "zeros":
        return F.conv2d(x, window.view(1, 1, k, k), padding=p)
    raise ValueError(f"unknown padding {padding!r}")


def flat_neighbourhoods(x: torch.Tensor, size: int, padding: str = "replicate") -> torch.Tensor:
    """(B, 1, H, W) bool: pixels whose ``size x size`` window (padded as ``filter2d`` pads) is constant."""
    p = size // 2
    xp = F.pad(x, (p, p, p, p), mode="replicate") if padding == "replicate" else F.pad(x, (p, p, p, p))
    return F.max_pool2d(xp, size, stride=1) == -F.max_pool2d(-xp, size, stride=1)


def mscn(gray: torch.Tensor, padding: str = "replicate") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-subtracted contrast-normalised coefficients of (B, 1, H, W) 0..255 images.

    Where the whole 7x7 window is constant the coefficient is exactly 0, as in MATLAB's
    ``imfilter`` (whose local mean of a constant window is that constant). A convolution returns
    the constant only to within rounding (+-1e-14), and those residues have a sign: the AGGD fits
    count them as negative / positive samples. On images with large flat 8-bit areas (30% of the
    pixels of the calibration image I19) that moved NIQE by +4.1%. The value is replaced, the
    gradient is kept. Returns (mscn, sigma), both (B, 1, H, W).
    """
    win = gaussian_window(like=gray)
    mu = filter2d(gray, win, padding)
    var = filter2d(gray * gray, win, padding) - mu * mu
    # clamp keeps the sqrt's gradient finite on perfectly flat regions
    sigma = torch.sqrt(var.abs().clamp_min(1e-10))
    m = (gray - mu) / (sigma + 1.0)
    flat = flat_neighbourhoods(gray.detach(), win.shape[-1], padding)
    return torch.where(flat, m - m.detach(), m), sigma


def _cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@lru_cache(maxsize=32)
def _imresize_matrix_cpu(in_len: int, scale: float) -> torch.Tensor:
    """The (out_len, in_len) weight matrix of MATLAB's bicubic ``imresize`` along one axis."""
    out_len = math.ceil(in_len * scale)
    width = 4.0 / scale if scale < 1 else 4.0  # antialiasing widens the kernel when shrinking
    u = torch.arange(1, out_len + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left.unsqueeze(1) + torch.arange(taps, dtype=torch.float64).unsqueeze(0)  # 1-based
    dist = u.unsqueeze(1) - idx
    w = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # symmetric border: index sequence 1..n, n..1, repeated
    period = 2 * in_len
    k = torch.remainder(idx - 1, period)
    k = torch.where(k < in_len, k, period - 1 - k).long()
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, k, w)
    return mat


def imresize_matlab(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB ``imresize(x, scale)`` (bicubic, antialiased) of (B, C, H, W); differentiable."""
    h, w = x.shape[-2:]
    mh = _imresize_matrix_cpu(h, float(scale)).to(dtype=x.dtype, device=x.device)
    mw = _imresize_matrix_cpu(w, float(scale)).to(dtype=x.dtype, device=x.device)
    return mh @ x @ mw.transpose(0, 1)


@lru_cache(maxsize=4)
def _ratio_table_cpu() -> tuple[torch.Tensor, torch.Tensor]:
    gam = torch.arange(200, 10001, dtype=torch.float64) / 1000.0  # 0.2:0.001:10
    ratio = torch.exp(2 * torch.lgamma(2 / gam) - torch.lgamma(1 / gam) - torch.lgamma(3 / gam))
    return gam, ratio  # ratio increases with gam


def shape_from_ratio(r: torch.Tensor) -> torch.Tensor:
    """Invert r = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) for a in [0.2, 10] (piecewise linear)."""
    gam, ratio = _ratio_table_cpu()
    gam = gam.to(device=r.device, dtype=r.dtype)
    ratio = ratio.to(device=r.device, dtype=r.dtype)
    rc = r.clamp(float(ratio[0]), float(ratio[-1]))
    hi = torch.searchsorted(ratio, rc.detach().contiguous()).clamp(1, len(ratio) - 1)
    lo = hi - 1
    t = (rc - ratio[lo]) / (ratio[hi] - ratio[lo])
    return gam[lo] + t * (gam[hi] - gam[lo])


def _gamma(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.lgamma(x))


def fit_aggd(x: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric generalised Gaussian fit along the last axis of ``x`` (..., N).

    Returns (alpha, left_std, right_std), each (...). Mittal et al.'s moment estimator.
    """
    neg = (x < 0).to(x.dtype)
    pos = (x > 0).to(x.dtype)
    left_std = torch.sqrt((x * x * neg).sum(-1) / neg.sum(-1).clamp_min(1) + eps)
    right_std = torch.sqrt((x * x * pos).sum(-1) / pos.sum(-1).clamp_min(1) + eps)
    gamma_hat = left_std / right_std
    r_hat = x.abs().mean(-1) ** 2 / ((x * x).mean(-1) + eps)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    return shape_from_ratio(r_norm), left_std, right_std


def fit_ggd(x: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric generalised Gaussian fit along the last axis: (alpha, std)."""
    var = (x * x).mean(-1)
    e_abs = x.abs().mean(-1)
    return shape_from_ratio(e_abs**2 / (var + eps)), torch.sqrt(var + eps)


def aggd_features(x: torch.Tensor, *, beta: bool) -> torch.Tensor:
    """(alpha, mean, left, right) of the AGGD fit, stacked on a new last axis: (..., 4).

    ``beta=True`` (NIQE): left/right are the AGGD scale parameters beta; ``False`` (BRISQUE): the
    squared one-sided standard deviations. The mean is (beta_r - beta_l) Gamma(2/a) / Gamma(1/a).
    """
    alpha, lstd, rstd = fit_aggd(x)
    const = torch.sqrt(_gamma(1 / alpha) / _gamma(3 / alpha))
    bl, br = lstd * const, rstd * const
    mean = (br - bl) * _gamma(2 / alpha) / _gamma(1 / alpha)
    if beta:
        return torch.stack([alpha, mean, bl, br], dim=-1)
    return torch.stack([alpha, mean, lstd**2, rstd**2], dim=-1)


# neighbour directions of the pairwise products (MATLAB circshift offsets: rows, columns)
PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


def pair_products(m: torch.Tensor) -> list[torch.Tensor]:
    """Products of each coefficient with its circularly shifted neighbour along the last two axes."""
    return [m * torch.roll(m, shifts=s, dims=(-2, -1)) for s in PAIR_SHIFTS]
