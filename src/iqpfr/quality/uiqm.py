"""UIQM, the underwater image quality measure (Panetta, Gao, Agaian, IEEE J. Oceanic Eng. 41(3), 2016).

    UIQM = c1 * UICM + c2 * UISM + c3 * UIConM,   c1 = 0.0282, c2 = 0.2953, c3 = 3.5753

computed on RGB in [0, 255] (the scorer takes [0, 1] and multiplies by 255), higher is better.

* **UICM** (colourfulness) on the opponent channels RG = R - G and YB = (R + G) / 2 - B:
  ``-0.0268 * sqrt(mu_RG^2 + mu_YB^2) + 0.1586 * sqrt(var_RG + var_YB)`` with the alpha-trimmed mean
  mu (sorted values, the lowest ceil(alpha_L K) and highest floor(alpha_R K) of the K pixels
  dropped, alpha_L = alpha_R = 0.1) and var the mean squared deviation of ALL pixels from mu.
* **UISM** (sharpness): for each channel, its Sobel gradient magnitude scaled to max 255, times the
  channel ("grayscale edge map"), then EME over 10x10-pixel blocks,
  ``EME = 2 / (k1 k2) * sum log(max_block / min_block)`` (blocks with a zero max or min add 0);
  UISM = 0.299 EME_R + 0.587 EME_G + 0.114 EME_B.
* **UIConM** (contrast): logAMEE over 10x10-pixel blocks of the RGB image (max and min over the
  block and its three channels): ``-1 / (k1 k2) * sum r log r``, r = (max - min) / (max + min)
  (blocks with r = 0 add 0).

Conventions follow the reference Python implementation used across the underwater literature
(xahidbuffon/FUnIE-GAN, ``Evaluation/uqim_utils.py``: the same constants, 10-pixel blocks, the
image cropped to whole blocks, scipy ``ndimage.sobel`` with its reflected border, the edge map
scaled by 255 / max). One deliberate difference: that code sums the trimmed values from index
ceil(alpha_L K) + 1 (one value fewer than it divides by); here the trimmed mean is the plain mean
of the kept values, as in the paper. Full resolution, no resizing. Differentiable almost everywhere
(sorting, max/min pooling and the Sobel filter pass gradients).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from iqpfr.quality.base import QualityScorer

C1, C2, C3 = 0.0282, 0.2953, 3.5753
ALPHA_L = ALPHA_R = 0.1
BLOCK = 10
CHANNEL_WEIGHTS = (0.299, 0.587, 0.114)


def trimmed_mean(values: torch.Tensor, alpha_l: float = ALPHA_L, alpha_r: float = ALPHA_R) -> torch.Tensor:
    """Alpha-trimmed mean over the last axis of ``values`` (B, K) -> (B,)."""
    k = values.shape[-1]
    lo, hi = math.ceil(alpha_l * k), math.floor(alpha_r * k)
    if k - lo - hi <= 0:
        raise ValueError(f"alpha trimming leaves no values of {k}")
    ordered = torch.sort(values, dim=-1).values
    return ordered[:, lo:k - hi].mean(dim=-1)


def uicm(rgb255: torch.Tensor) -> torch.Tensor:
    """Colourfulness (B,) of RGB (B, 3, H, W) in [0, 255]."""
    r, g, b = rgb255[:, 0].flatten(1), rgb255[:, 1].flatten(1), rgb255[:, 2].flatten(1)
    rg, yb = r - g, (r + g) / 2 - b
    mu_rg, mu_yb = trimmed_mean(rg), trimmed_mean(yb)
    var_rg = ((rg - mu_rg[:, None]) ** 2).mean(dim=1)
    var_yb = ((yb - mu_yb[:, None]) ** 2).mean(dim=1)
    return -0.0268 * torch.sqrt(mu_rg**2 + mu_yb**2 + 1e-12) + 0.1586 * torch.sqrt(var_rg + var_yb + 1e-12)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """hypot of scipy-style Sobel derivatives of x (B, C, H, W), border replicated (= scipy 'reflect'
    for a 3x3 kernel)."""
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    k_rows = torch.outer(diff, smooth)  # derivative along rows (axis 0), smoothing along columns
    kernels = torch.stack([k_rows, k_rows.t()])[:, None]  # (2, 1, 3, 3)
    c = x.shape[1]
    padded = F.pad(x.reshape(-1, 1, *x.shape[-2:]), (1, 1, 1, 1), mode="replicate")
    d = F.conv2d(padded, kernels).reshape(x.shape[0], c, 2, *x.shape[-2:])
    squared = d[:, :, 0] ** 2 + d[:, :, 1] ** 2
    # exactly 0 where the image is flat: EME skips blocks whose minimum is 0, and an epsilon there
    # would turn every flat block into a huge log(max / eps)
    flat = squared == 0
    return torch.where(flat, torch.zeros_like(squared), torch.sqrt(torch.where(flat, torch.ones_like(squared), squared)))


def _blocks(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block max and min (B, C, k2, k1) of x (B, C, H, W) cropped to whole blocks."""
    k2, k1 = x.shape[-2] // block, x.shape[-1] // block
    if k1 == 0 or k2 == 0:
        raise ValueError(f"UIQM needs at least {block}x{block} pixels, got {x.shape[-1]}x{x.shape[-2]}")
    x = x[..., : k2 * block, : k1 * block]
    return F.max_pool2d(x, block), -F.max_pool2d(-x, block)


def eme(x: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """EME (B, C) of x (B, C, H, W) >= 0: 2 / (k1 k2) sum log(max / min) over blocks (0 where either is 0)."""
    mx, mn = _blocks(x, block)
    valid = (mx > 0) & (mn > 0)
    ratio = torch.where(valid, mx, torch.ones_like(mx)) / torch.where(valid, mn, torch.ones_like(mn))
    return 2.0 * torch.log(ratio).flatten(2).mean(dim=2)


def uism(rgb255: torch.Tensor) -> torch.Tensor:
    """Sharpness (B,) of RGB (B, 3, H, W) in [0, 255]."""
    mag = sobel_magnitude(rgb255)
    peak = mag.flatten(2).amax(dim=2).clamp_min(1e-12)[:, :, None, None]
    edge_map = mag * (255.0 / peak) * rgb255
    weights = torch.tensor(CHANNEL_WEIGHTS, dtype=rgb255.dtype, device=rgb255.device)
    return (eme(edge_map) * weights).sum(dim=1)


def uiconm(rgb255: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Contrast (B,) of RGB (B, 3, H, W) in [0, 255]: logAMEE over blocks spanning the 3 channels."""
    mx, mn = _blocks(rgb255, block)
    mx, mn = mx.amax(dim=1), mn.amin(dim=1)  # (B, k2, k1)
    top, bot = mx - mn, mx + mn
    valid = (top > 0) & (bot > 0)
    r = torch.where(valid, top, torch.ones_like(top)) / torch.where(valid, bot, torch.ones_like(bot))
    return -(r * torch.log(r)).flatten(1).mean(dim=1)


def uiqm_components(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """UICM, UISM, UIConM and UIQM, each (B,), of images (B, 3, H, W) RGB in [0, 1]."""
    rgb255 = images.to(torch.float32) * 255.0 if images.dtype != torch.float64 else images * 255.0
    parts = {"uicm": uicm(rgb255), "uism": uism(rgb255), "uiconm": uiconm(rgb255)}
    parts["uiqm"] = C1 * parts["uicm"] + C2 * parts["uism"] + C3 * parts["uiconm"]
    return parts


class UIQM(QualityScorer):
    """UIQM scorer: (B, 3, H, W) RGB in [0, 1] -> (B,), higher is better, differentiable."""

    name = "uiqm"
    higher_better = True
    differentiable = True
    range = (0.0, 5.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return uiqm_components(images)["uiqm"]

    def extra_info(self) -> dict:
        return {"constants": [C1, C2, C3], "alpha": [ALPHA_L, ALPHA_R], "block": BLOCK,
                "reference": "Panetta et al. 2016; conventions of FUnIE-GAN Evaluation/uqim_utils.py"}
