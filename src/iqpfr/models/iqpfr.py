"""IQPFR (arXiv 2503.09294): CodeFormer with a dual codebook and quality-conditioned code prediction.

Method.md §3.2-3.5. Differences from ``CodeFormer``:

* ``quantize`` is a ``DualCodebookQuantizer``: common codebook ``quantize.embedding`` and HQ+ codebook
  ``quantize.embedding_hq``; the decoder input is ``common[i1] + alpha * hq[i0]``.
* ``quality_embed`` (num_buckets x C*h*w) is added to ``lq_feat`` before the Transformer; the
  quality target q (per sample, default 0.9 = top bucket) is the GT image's normalised IQA score
  in training and a user setting at inference.
* One head predicts both index sequences: output channel ``2k + j`` is entry k of codebook j,
  j = 0 HQ+, j = 1 common (the paper's interleaved layout, method.md §3.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from iqpfr.models.adapters import DEFAULT_QUALITY
from iqpfr.models.codeformer import CodeFormer
from iqpfr.models.conditioning import QualityEmbedding, quality_tensor
from iqpfr.models.quantizer import DualCodebookQuantizer, straight_through


def split_dual_logits(head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved head output (B, L, 2N) -> (common (B, L, N), hq (B, L, N)).

    Channel 2k + j is code k of codebook j (j = 0 HQ+, j = 1 common): a (B, L, N, 2) view.
    """
    pairs = head.view(*head.shape[:-1], -1, 2)
    return pairs[..., 1], pairs[..., 0]


class IQPFR(CodeFormer):
    """IQPFR network. Arguments as ``CodeFormer`` plus:

    alpha: weight of the HQ+ feature in ``common + alpha * hq`` (paper 0.8).
    hq_threshold: quality score above which a training sample uses the HQ+ branch (stage I, 0.7).
    num_quality_buckets: rows of the quality embedding (paper 10).
    quality_mode: ``"bucket"`` (paper, floor(10 q)) or ``"continuous"`` (interpolated); see
        ``iqpfr.models.conditioning``.
    default_quality: target used when ``forward`` gets ``quality=None`` (0.9, the top bucket).
    default_w: fidelity weight for ``w=None``; 0 because the paper's stage-II model has untrained
        fusion blocks (train stage III before using w > 0).
    """

    num_codebooks = 2

    def __init__(
        self,
        *,
        img_size: int = 512,
        nf: int = 64,
        ch_mult: Sequence[int] = (1, 2, 2, 4, 4, 8),
        res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        codebook_size: int = 1024,
        emb_dim: int = 256,
        dim_embd: int = 512,
        n_head: int = 8,
        n_layers: int = 9,
        dim_mlp: int = 1024,
        connect_list: Sequence[int] = (32, 64, 128, 256),
        default_w: float = 0.0,
        adain: bool = True,
        alpha: float = 0.8,
        hq_threshold: float = 0.7,
        num_quality_buckets: int = 10,
        quality_mode: str = "bucket",
        default_quality: float = DEFAULT_QUALITY,
    ) -> None:
        super().__init__(
            img_size=img_size, nf=nf, ch_mult=ch_mult, res_blocks=res_blocks, attn_resolutions=attn_resolutions,
            codebook_size=codebook_size, emb_dim=emb_dim, dim_embd=dim_embd, n_head=n_head, n_layers=n_layers,
            dim_mlp=dim_mlp, connect_list=connect_list, default_w=default_w, adain=adain,
        )
        self.config.update(
            alpha=alpha, hq_threshold=hq_threshold, num_quality_buckets=num_quality_buckets,
            quality_mode=quality_mode, default_quality=default_quality,
        )
        self.default_quality = default_quality
        # replaces the base single codebook in place (same position in the state dict)
        self.quantize = DualCodebookQuantizer(
            codebook_size=codebook_size, emb_dim=emb_dim, alpha=alpha, hq_threshold=hq_threshold
        )
        self.quality_embed = QualityEmbedding(self.latent_shape, num_buckets=num_quality_buckets, mode=quality_mode)

    def quality_condition(self, quality: float | torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """The embedding (B, C, h, w) added to lq_feat for quality (None, float or (B,) in [0, 1])."""
        return self.quality_embed(quality_tensor(quality, batch, self.default_quality, device))

    def condition(self, lq_feat: torch.Tensor, quality: float | torch.Tensor | None) -> torch.Tensor:
        """lq_feat (B, C, h, w) + quality embedding (then any attached adapter)."""
        lq_feat = lq_feat + self.quality_condition(quality, lq_feat.shape[0], lq_feat.device).to(lq_feat.dtype)
        return super().condition(lq_feat, quality)

    def predict_logits(self, lq_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(common logits (B, h*w, N), HQ+ logits (B, h*w, N)) from the interleaved head."""
        return split_dual_logits(self.code_logits(lq_feat))

    def lookup(
        self,
        indices: torch.Tensor,
        hq_indices: torch.Tensor | None = None,
        *,
        straight_through_from: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``common[indices] + alpha * hq[hq_indices]`` (B, C, h, w); ``hq_indices=None`` uses the common
        codebook only. No gradient reaches either codebook; see ``CodeFormer.lookup``."""
        if hq_indices is None:
            quant = self.quantize.lookup(indices, self.latent_hw)
        else:
            quant = self.quantize.lookup_dual(indices, hq_indices, self.latent_hw)
        return quant if straight_through_from is None else straight_through(quant, straight_through_from)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
