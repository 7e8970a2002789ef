"""Perceptual losses for stages I and III.

The paper recipe uses LPIPS-VGG (ImageNet-trained VGG-16 features + linear calibration weights).
Those weights cannot be downloaded in an offline build, and the features of a randomly initialised
network are not perceptual features, so the offline default is an honest, parameter-free
*structural* loss instead:

    L_pyramid(x, y) = sum_j mean|Lap_j(x) - Lap_j(y)|  +  (1 - MS-SSIM(x, y))

- ``Lap_j``: the bands of a Laplacian pyramid (5x5 binomial filter, up to 5 levels). Averaging
  per band weights every octave equally, so coarse structure and fine texture both count, unlike
  a pixel L1 that is dominated by the many fine-scale pixels (the "Lap1" loss of Bojanowski et al.,
  2018, used there in place of a perceptual loss for generative training).
- ``MS-SSIM`` (Wang, Simoncelli and Bovik, 2003): a full-reference structural similarity that
  correlates with human judgements far better than pixel errors; L1 + MS-SSIM is the mix Zhao et
  al. (2017, "Loss Functions for Image Restoration with Neural Networks") found perceptually best
  among the non-learned losses.

What it is not: it has no learned notion of texture or of faces, so a stage I model trained with
it reconstructs slightly smoother textures than with LPIPS (the GAN term restores some sharpness).
When LPIPS-VGG weights are available (``iqpfr.eval.lpips``), ``perceptual: lpips`` or ``auto``
uses them (the distance is the paper's loss; its networks stay frozen).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _binomial_kernel(channels: int, device, dtype) -> torch.Tensor:
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype) / 16.0
    return (k1[:, None] * k1[None, :]).expand(channels, 1, 5, 5).contiguous()


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Bands of a Laplacian pyramid of ``x`` (B, C, H, W); the last entry is the low-pass residual."""
    kernel = _binomial_kernel(x.shape[1], x.device, x.dtype)
    bands = []
    current = x
    for _ in range(levels - 1):
        if min(current.shape[-2:]) < 4:
            break
        blurred = F.conv2d(F.pad(current, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])
        down = blurred[..., ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = down
    bands.append(current)
    return bands


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = x.shape[1]
    c1, c2 = 0.01**2, 0.03**2  # data range 1
    mu_x = F.conv2d(x, window, groups=c)
    mu_y = F.conv2d(y, window, groups=c)
    sxx = F.conv2d(x * x, window, groups=c) - mu_x**2
    syy = F.conv2d(y * y, window, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, window, groups=c) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs
    return ssim.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, max_levels: int = 5) -> torch.Tensor:
    """Multi-scale SSIM per sample (B,) of images in [0, 1]; fewer scales for small images.

    Scales stop once the image would be smaller than the 11-pixel window; the standard scale
    weights are renormalised over the scales used.
    """
    size = min(x.shape[-2:])
    win = min(11, size if size % 2 else size - 1)
    levels = max(1, min(max_levels, int(math.log2(max(size / 11, 1))) + 1))
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:levels], device=x.device, dtype=x.dtype)
    weights = weights / weights.sum()
    window = _gaussian_window(win, 1.5, x.shape[1], x.device, x.dtype)
    result = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    for i in range(levels):
        ssim, cs = _ssim_and_cs(x, y, window)
        # clamp keeps the fractional powers finite and differentiable for negative correlations
        value = ssim if i == levels - 1 else cs
        result = result * value.clamp_min(1e-6) ** weights[i]
        if i < levels - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return result


class PyramidPerceptualLoss(nn.Module):
    """Band-balanced Laplacian-pyramid L1 + (1 - MS-SSIM) of images in [-1, 1]; scalar loss."""

    def __init__(self, levels: int = 5, ssim_weight: float = 1.0) -> None:
        super().__init__()
        self.levels = levels
        self.ssim_weight = ssim_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = (output.float() + 1) / 2
        y = (target.float() + 1) / 2
        bands = zip(laplacian_pyramid(x, self.levels), laplacian_pyramid(y, self.levels))
        lap = sum((a - b).abs().mean() for a, b in bands)
        return lap + self.ssim_weight * (1 - ms_ssim(x.clamp(0, 1), y.clamp(0, 1))).mean()


class LPIPSLoss(nn.Module):
    """LPIPS-VGG distance of images in [-1, 1] (needs its ImageNet weights); scalar loss."""

    def __init__(self, lpips_module: nn.Module) -> None:
        super().__init__()
        self.lpips = lpips_module.eval()
        for p in self.lpips.parameters():
            p.requires_grad_(False)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lpips(output.float(), target.float()).mean()


def _try_lpips(offline: bool) -> nn.Module | None:
    """LPIPS-VGG with sha256-checked weights (``iqpfr.eval.lpips``), or None when unavailable.

    ``offline=True`` only uses weights already in the cache (``iqpfr weights download
    vgg16-imagenet lpips-vgg-v0.1`` puts them there); otherwise a download is attempted.
    """
    try:
        from iqpfr.eval.lpips import load_lpips_vgg

        return load_lpips_vgg(offline=offline)
    except (ImportError, RuntimeError, OSError):
        return None


def build_perceptual(kind: str) -> nn.Module | None:
    """``lpips`` (download if needed; error when unavailable), ``pyramid``, ``none`` (None) or
    ``auto`` (LPIPS if its weights are already cached, else pyramid, with a warning)."""
    if kind == "none":
        return None
    if kind == "pyramid":
        return PyramidPerceptualLoss()
    net = _try_lpips(offline=kind == "auto")
    if net is not None:
        return LPIPSLoss(net)
    if kind == "lpips":
        raise RuntimeError("perceptual: lpips needs the VGG-16 ImageNet and LPIPS v0.1 weights "
                           "(`iqpfr weights download vgg16-imagenet lpips-vgg-v0.1`); they are not "
                           "available: use perceptual: pyramid, or auto to fall back")
    warnings.warn("LPIPS-VGG weights not available: using the offline pyramid perceptual loss "
                  "(Laplacian-pyramid L1 + MS-SSIM)", stacklevel=2)
    return PyramidPerceptualLoss()
