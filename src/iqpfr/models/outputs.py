"""The output record every restoration network returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RestoreOutput:
    """Result of ``model(lq, w=..., quality=...)``.

    image:      (B, 3, H, W) raw restored batch, nominally in [-1, 1] but not clamped.
    logits:     (B, tokens, codes) code-prediction logits (codebook models); for dual-codebook
                models the common-codebook logits, with ``hq_logits`` holding the HQ+ ones.
    lq_feat:    (B, C, h, w) encoder latent fed to the code predictor (after any quality embedding).
    indices:    (B, tokens) int64 top-1 code indices (common codebook for dual models).
    quant_feat: (B, C, h, w) looked-up (and AdaIN-normalised at inference) feature entering the decoder.
    """

    image: torch.Tensor
    logits: torch.Tensor | None = None
    lq_feat: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    quant_feat: torch.Tensor | None = None
    hq_logits: torch.Tensor | None = None
    hq_indices: torch.Tensor | None = None
