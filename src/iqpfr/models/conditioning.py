"""Quality-target conditioning: a learned embedding of a per-sample quality score q in [0, 1].

Two lookup modes over ``num_buckets`` learned rows (method.md §3.3, §13):

* ``"bucket"`` (the paper): row ``floor(num_buckets * q)``, clamped to 0..num_buckets-1, so q = 1.0
  uses the top row (the reference code indexes out of range there). q is rounded to float32 first
  and the product is formed in float32, so a decimal such as 0.7 or 0.9 lands in bucket 7 or 9
  whether it arrives as a Python float, a float64 or a float32 tensor (and a batch equals its
  samples run one by one).
* ``"continuous"``: linear interpolation between the two rows whose bucket centres
  ((k + 0.5) / num_buckets) surround q; at a bucket centre it equals the bucketed row (interpolation
  weights within 1e-6 of 0 or 1 are snapped), below the first centre / above the last it is the
  first / last row. A smooth quality slider.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

QUALITY_MODES = ("bucket", "continuous")


def quality_tensor(quality: float | torch.Tensor | None, batch: int, default: float, device: torch.device) -> torch.Tensor:
    """Per-sample quality (B,) float32: ``None`` -> ``default``; a float or () tensor is broadcast."""
    if quality is None:
        quality = default
    quality = torch.as_tensor(quality).to(device=device, dtype=torch.float32).reshape(-1)
    if quality.numel() not in (1, batch):
        raise ValueError(f"quality has {quality.numel()} values for a batch of {batch}")
    return quality.expand(batch)


class QualityEmbedding(nn.Module):
    """Learned table ``weight`` (num_buckets, prod(shape)); ``forward(q (B,)) -> (B, *shape)``.

    ``zero_init=True`` gives an embedding that adds exactly nothing until trained (plug-and-play
    adapters); otherwise rows start as N(0, 1) like ``nn.Embedding`` (the paper's ``score_embed``).
    """

    def __init__(
        self, shape: Sequence[int], *, num_buckets: int = 10, mode: str = "bucket", zero_init: bool = False
    ) -> None:
        super().__init__()
        if mode not in QUALITY_MODES:
            raise ValueError(f"quality mode must be one of {QUALITY_MODES}, got {mode!r}")
        if num_buckets < 2:
            raise ValueError(f"num_buckets must be >= 2, got {num_buckets}")
        self.shape, self.num_buckets, self.mode = tuple(int(s) for s in shape), num_buckets, mode
        self.weight = nn.Parameter(torch.empty(num_buckets, math.prod(self.shape)))
        if zero_init:
            nn.init.zeros_(self.weight)
        else:
            nn.init.normal_(self.weight)

    def bucket(self, quality: torch.Tensor) -> torch.Tensor:
        """Paper bucket index (B,) int64 of quality (B,): floor(num_buckets * q) clamped to the table."""
        product = quality.to(torch.float32) * self.num_buckets  # float32 on purpose, see module doc
        return torch.floor(product).clamp(0, self.num_buckets - 1).long()

    def forward(self, quality: torch.Tensor) -> torch.Tensor:
        """quality (B,) in [0, 1] -> embedding (B, *shape)."""
        if self.mode == "bucket":
            rows = self.weight[self.bucket(quality)]
        else:
            n = self.num_buckets
            pos = (quality.to(torch.float32).to(torch.float64) * n - 0.5).clamp(0.0, n - 1.0)
            lo = torch.floor(pos).clamp(max=n - 2)
            frac = pos - lo
            frac = torch.where(frac < 1e-6, 0.0, torch.where(frac > 1 - 1e-6, 1.0, frac))
            frac = frac.to(self.weight.dtype)[:, None]
            lo = lo.long()
            rows = self.weight[lo] * (1.0 - frac) + self.weight[lo + 1] * frac
        return rows.view(-1, *self.shape)
