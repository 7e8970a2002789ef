"""PIQE (Venkatanath et al., 2015) in batched PyTorch, following MATLAB's ``piqe`` (R2018b+).

Conventions (those of the MATLAB function): the RGB image is padded by edge replication at the bottom
and right to whole 16x16 blocks, converted with ``rgb2gray`` and rounded to 8 bits, then MSCN-normalised
(7x7 Gaussian, sigma 7/6, replicate border, constant 1). A block is *active* when the variance of its
MSCN values exceeds 0.1. An active block is *impaired* when any 6-pixel segment of its four edges has
a standard deviation below 0.1, and *noisy* when sigma > 2 beta (beta: centre-surround deviation
criterion; MATLAB's surround drops columns 8 and 10, 1-based, a quirk kept for identical numbers).
Score = 100 (sum_active [impaired] (1 - var) + [noisy] var + 1) / (n_active + 1). Lower is better,
range [0, 100].

Gradients flow through the variances of the flagged blocks; the block decisions themselves are hard
thresholds (piecewise-constant), so it is differentiable almost everywhere but a weak loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iqpfr.quality.base import QualityScorer
from iqpfr.quality.features import mscn, rgb_to_gray255

BLOCK = 16
ACTIVITY_THRESHOLD = 0.1
IMPAIRED_THRESHOLD = 0.1
SEGMENT = 6


def _edge_segment_std(edges: torch.Tensor) -> torch.Tensor:
    """(..., 16) edge pixels -> (..., 11) unbiased std of each 6-pixel sliding segment."""
    return edges.unfold(-1, SEGMENT, 1).std(dim=-1)


def piqe_blocks(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-block PIQE quantities of (B, 1, H, W) 0..255 images with H, W multiples of 16.

    Returns (variance, active, impaired, noisy), each (B, n_blocks).
    """
    m, _ = mscn(gray, padding="replicate")
    b, _, h, w = m.shape
    blocks = m.view(b, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 1, 3, 2, 4).reshape(b, -1, BLOCK, BLOCK)
    var = blocks.flatten(-2).var(dim=-1)
    active = var > ACTIVITY_THRESHOLD

    edges = torch.stack([blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :], blocks[..., :, 0]], dim=-2)
    impaired = (_edge_segment_std(edges) < IMPAIRED_THRESHOLD).flatten(-2).any(dim=-1)

    sigma = torch.sqrt(var.clamp_min(1e-12))
    centre = blocks[..., :, 7:9].flatten(-2)
    keep = [c for c in range(BLOCK) if c not in (7, 9)]  # MATLAB deletes column 8, then "column 9" of the rest
    surround = blocks[..., :, keep].flatten(-2)
    c_std, s_std = centre.std(dim=-1), surround.std(dim=-1)
    ratio = torch.where(s_std > 0, c_std / s_std.clamp_min(1e-12), torch.zeros_like(c_std))
    beta = (sigma - ratio).abs() / torch.maximum(sigma, ratio).clamp_min(1e-12)
    noisy = sigma > 2 * beta
    return var, active, impaired, noisy


def piqe_score(gray: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) 0..255 (multiples of 16) -> (B,) PIQE in [0, 100]."""
    var, active, impaired, noisy = piqe_blocks(gray)
    a = active.to(var.dtype)
    dist = (a * (impaired.to(var.dtype) * (1 - var) + noisy.to(var.dtype) * var)).sum(dim=1)
    return 100.0 * (dist + 1.0) / (a.sum(dim=1) + 1.0)


def pad_to_blocks(images: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) at the bottom/right to multiples of ``block`` (as MATLAB does)."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % block, (-w) % block
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph), mode="replicate")
    return images


class PIQE(QualityScorer):
    """PIQE score (lower is better, 0-100; roughly < 35 good, > 50 poor)."""

    name = "piqe"
    higher_better = False
    differentiable = True
    range = (0.0, 100.0)

    def __init__(self, quantize: bool = True) -> None:
        super().__init__()
        self.quantize = quantize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if min(images.shape[-2:]) < SEGMENT:
            raise ValueError(f"PIQE needs images of at least {SEGMENT} pixels per side, got {tuple(images.shape[-2:])}")
        gray = rgb_to_gray255(pad_to_blocks(images), quantize=self.quantize)
        return piqe_score(gray).to(images.dtype)
