"""Nearest-neighbour vector quantisers: CodeFormer's single codebook and IQPFR's dual codebook.

Method.md §3.1-3.2. Losses are returned per sample (mean over C*h*w) so that callers can mask
samples exactly; their batch mean equals the usual scalar loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def straight_through(value: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Forward ``value`` exactly; backward copies the gradient to ``source`` and never to ``value``.

    Written as ``sg(value) + (source - sg(source))`` rather than ``source + sg(value - source)``
    so that the forward result is bit-identical to ``value`` (no rounding from the subtraction).
    """
    return value.detach() + (source - source.detach())


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(dim=1)


def _perplexity(indices: torch.Tensor, codebook_size: int, sample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """exp(entropy) of the code-usage histogram: 1 = one code used, codebook_size = uniform use.

    ``sample_mask`` (B,) restricts the histogram to some samples (an empty selection gives 1).
    """
    weights = None
    if sample_mask is not None:
        weights = sample_mask.to(torch.float32)[:, None].expand_as(indices).reshape(-1)
    counts = torch.bincount(indices.reshape(-1), weights=weights, minlength=codebook_size).float()
    probs = counts / counts.sum().clamp_min(1.0)
    return torch.exp(-(probs * torch.log(probs + 1e-10)).sum())


@dataclass
class Quantized:
    """Output of a quantiser's ``forward``.

    quant:      (B, C, h, w) quantised feature with a straight-through gradient to the input.
    indices:    (B, h*w) int64 code indices (common codebook), token t = y*w + x.
    loss:       (B,) codebook + beta * commitment loss of the common codebook, per sample.
    perplexity: () code-usage perplexity of the common codebook in this batch.
    hq_indices, hq_loss, hq_perplexity: the same for the HQ+ codebook (dual quantiser only);
                ``hq_loss`` is already zero for masked samples.
    hq_mask:    (B,) bool, samples whose HQ+ branch was used (dual quantiser only).
    """

    quant: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor
    hq_indices: torch.Tensor | None = None
    hq_loss: torch.Tensor | None = None
    hq_perplexity: torch.Tensor | None = None
    hq_mask: torch.Tensor | None = None


class VectorQuantizer(nn.Module):
    """Codebook ``embedding`` (codebook_size x emb_dim), L2 nearest neighbour, straight-through."""

    def __init__(self, *, codebook_size: int, emb_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.codebook_size, self.emb_dim, self.beta = codebook_size, emb_dim, beta
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    @staticmethod
    def nearest(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """Indices (B, h*w) of the codebook rows nearest in L2 to each token of z (B, C, h, w)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        dist = (flat**2).sum(dim=1, keepdim=True) + (codebook**2).sum(dim=1) - 2.0 * flat @ codebook.t()
        return dist.argmin(dim=1).reshape(z.shape[0], -1)

    @staticmethod
    def rows(codebook: torch.Tensor, indices: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Codebook rows for indices (B, h*w) as a (B, C, h, w) map (gradient reaches ``codebook``)."""
        b = indices.shape[0]
        return codebook[indices.reshape(-1)].reshape(b, shape[0], shape[1], -1).permute(0, 3, 1, 2).contiguous()

    def _quantize(self, z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices = self.nearest(z.detach(), codebook)
        zq = self.rows(codebook, indices, z.shape[-2:])
        # as coded in CodeFormer: beta weighs the codebook-update term (method.md §3.1)
        loss = _per_sample_mean((zq.detach() - z) ** 2) + self.beta * _per_sample_mean((zq - z.detach()) ** 2)
        return straight_through(zq, z), indices, loss

    def forward(self, z: torch.Tensor) -> Quantized:
        """Quantise z (B, emb_dim, h, w); see ``Quantized``."""
        quant, indices, loss = self._quantize(z, self.embedding.weight)
        return Quantized(quant, indices, loss, _perplexity(indices, self.codebook_size))

    def lookup(self, indices: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Codebook rows (B, emb_dim, h, w) for indices (B, h*w); detached from the codebook."""
        return self.rows(self.embedding.weight.detach(), indices, shape)


class DualCodebookQuantizer(VectorQuantizer):
    """IQPFR's common + HQ+ codebooks quantising the same z; output ``common + alpha * hq``.

    ``embedding`` is the common codebook (same key as CodeFormer's ``quantize.embedding.weight``, so a
    CodeFormer VQGAN initialises it directly); ``embedding_hq`` is the HQ+ codebook. In ``forward`` a
    sample uses the HQ+ branch (and gets its VQ loss) only when its quality score is above
    ``hq_threshold``.
    """

    def __init__(
        self, *, codebook_size: int, emb_dim: int, beta: float = 0.25, alpha: float = 0.8, hq_threshold: float = 0.7
    ) -> None:
        super().__init__(codebook_size=codebook_size, emb_dim=emb_dim, beta=beta)
        self.alpha, self.hq_threshold = alpha, hq_threshold
        self.embedding_hq = nn.Embedding(codebook_size, emb_dim)
        nn.init.uniform_(self.embedding_hq.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def hq_mask(self, quality: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """(B,) bool: quality > hq_threshold; all True when no quality is given."""
        if quality is None:
            return torch.ones(batch, dtype=torch.bool, device=device)
        quality = torch.as_tensor(quality, device=device).reshape(-1).expand(batch)
        return quality > self.hq_threshold

    def forward(self, z: torch.Tensor, quality: torch.Tensor | None = None) -> Quantized:
        """Quantise z (B, emb_dim, h, w) with both codebooks; ``quality`` (B,) in [0, 1] is the
        GT image score that selects which samples use (and train) the HQ+ branch."""
        common, indices, loss = self._quantize(z, self.embedding.weight)
        hq, hq_indices, hq_loss = self._quantize(z, self.embedding_hq.weight)
        mask = self.hq_mask(quality, z.shape[0], z.device)
        maskf = mask.to(z.dtype)
        quant = common + self.alpha * (hq * maskf.view(-1, 1, 1, 1))
        return Quantized(
            quant, indices, loss, _perplexity(indices, self.codebook_size),
            hq_indices=hq_indices, hq_loss=hq_loss * maskf,
            hq_perplexity=_perplexity(hq_indices, self.codebook_size, mask),
            hq_mask=mask,
        )

    def lookup_dual(self, indices: torch.Tensor, hq_indices: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """``common[indices] + alpha * hq[hq_indices]`` as (B, emb_dim, h, w); detached from both codebooks."""
        common = self.rows(self.embedding.weight.detach(), indices, shape)
        return common + self.alpha * self.rows(self.embedding_hq.weight.detach(), hq_indices, shape)
