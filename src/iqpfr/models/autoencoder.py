"""Stage-I VQGAN autoencoder (encoder + quantiser + generator), single or dual codebook.

Its state-dict keys (``encoder.*``, ``quantize.*``, ``generator.*``) equal those of ``CodeFormer`` /
``IQPFR`` with the same sizes, so a stage-I checkpoint initialises stage II with
``model.load_autoencoder_state_dict(vq.state_dict())``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from iqpfr.models.quantizer import DualCodebookQuantizer, Quantized, VectorQuantizer
from iqpfr.models.vqgan import VQEncoder, VQGenerator

_SHARED_KEYS = ("img_size", "nf", "ch_mult", "res_blocks", "attn_resolutions", "codebook_size", "emb_dim")


@dataclass
class AutoEncoderOutput:
    """image: (B, 3, S, S) raw reconstruction; quantized: the quantiser's ``Quantized`` record
    (per-sample losses, indices, perplexities, HQ+ mask)."""

    image: torch.Tensor
    quantized: Quantized


class VQAutoEncoder(nn.Module):
    """VQGAN of CodeFormer (``dual_codebook=False``) or IQPFR (``dual_codebook=True``).

    Sizes as ``CodeFormer``; ``beta`` weighs the codebook-update term of the VQ loss; ``alpha`` and
    ``hq_threshold`` configure the dual quantiser (see ``DualCodebookQuantizer``).
    """

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
        beta: float = 0.25,
        dual_codebook: bool = False,
        alpha: float = 0.8,
        hq_threshold: float = 0.7,
    ) -> None:
        super().__init__()
        ch_mult, attn_resolutions = [int(m) for m in ch_mult], [int(r) for r in attn_resolutions]
        self.config = dict(
            img_size=img_size, nf=nf, ch_mult=ch_mult, res_blocks=res_blocks, attn_resolutions=attn_resolutions,
            codebook_size=codebook_size, emb_dim=emb_dim, beta=beta, dual_codebook=dual_codebook,
            alpha=alpha, hq_threshold=hq_threshold,
        )
        vq = dict(img_size=img_size, nf=nf, ch_mult=ch_mult, res_blocks=res_blocks,
                  attn_resolutions=attn_resolutions, emb_dim=emb_dim)
        self.encoder = VQEncoder(**vq)
        if dual_codebook:
            self.quantize: VectorQuantizer = DualCodebookQuantizer(
                codebook_size=codebook_size, emb_dim=emb_dim, beta=beta, alpha=alpha, hq_threshold=hq_threshold
            )
        else:
            self.quantize = VectorQuantizer(codebook_size=codebook_size, emb_dim=emb_dim, beta=beta)
        self.generator = VQGenerator(**vq)
        self.dual_codebook = dual_codebook

    @classmethod
    def matching(cls, restorer: nn.Module, **overrides) -> VQAutoEncoder:
        """The autoencoder whose weights fit ``restorer`` (a CodeFormer or IQPFR instance)."""
        kwargs = {k: restorer.config[k] for k in _SHARED_KEYS}
        kwargs["dual_codebook"] = getattr(restorer, "num_codebooks", 1) == 2
        if kwargs["dual_codebook"]:
            kwargs.update(alpha=restorer.config["alpha"], hq_threshold=restorer.config["hq_threshold"])
        return cls(**{**kwargs, **overrides})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, S, S) in [-1, 1] -> continuous latent z (B, emb_dim, h, w)."""
        return self.encoder(x)

    def quantize_latent(self, z: torch.Tensor, quality: torch.Tensor | None = None) -> Quantized:
        """Quantise z; ``quality`` (B,) masks the HQ+ branch (dual codebook only, ignored otherwise)."""
        if self.dual_codebook:
            return self.quantize(z, quality)
        return self.quantize(z)

    def forward(self, x: torch.Tensor, quality: torch.Tensor | None = None) -> AutoEncoderOutput:
        """Reconstruct x (B, 3, S, S) in [-1, 1]. ``quality`` (B,) in [0, 1] is the GT score: with a
        dual codebook, samples scoring <= hq_threshold use (and train) the common codebook only;
        ``None`` uses both codebooks for every sample."""
        quantized = self.quantize_latent(self.encode(x), quality)
        return AutoEncoderOutput(self.generator(quantized.quant), quantized)

    @torch.no_grad()
    def code_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stage-II targets for HQ images x: (common indices (B, h*w), HQ+ indices or None).
        HQ+ indices are computed for every image, whatever its score (method.md §3.2)."""
        q = self.quantize_latent(self.encode(x))
        return q.indices, q.hq_indices
