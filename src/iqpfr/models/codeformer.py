"""CodeFormer (arXiv 2206.11253): VQGAN codebook prior + Transformer code prediction + CFT fusion.

State-dict keys and shapes equal the released ``codeformer.pth`` (``params_ema``) for the official
sizes (``create_model("codeformer")``); every size is a constructor argument.

Inference (``forward``) chains the building blocks below, which training code uses directly::

    lq_feat, skips = model.encode(lq)                   # (B, C, h, w), {r: (B, C_r, r, r)}
    lq_feat = model.condition(lq_feat, quality)         # + quality embedding (IQPFR / adapters)
    logits, hq_logits = model.predict_logits(lq_feat)   # (B, h*w, N), None or (B, h*w, N)
    indices = logits.argmax(-1)                         # (B, h*w)
    quant = model.lookup(indices, hq_indices, straight_through_from=lq_feat)  # (B, C, h, w)
    quant = adaptive_instance_norm(quant, lq_feat)      # inference only, if adain (CodeFormer adain=True)
    image = model.decode(quant, skips, w)               # (B, 3, S, S), raw
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from iqpfr.models.adapters import apply_quality_adapter
from iqpfr.models.fuse import FuseSFTBlock, adaptive_instance_norm, fidelity_weight
from iqpfr.models.outputs import RestoreOutput
from iqpfr.models.quantizer import VectorQuantizer, straight_through
from iqpfr.models.transformer import TransformerSALayer
from iqpfr.models.vqgan import VQEncoder, VQGenerator


class CodeFormer(nn.Module):
    """CodeFormer network.

    Args:
        img_size: input/output side S (power of two); latent side s = S / 2^(len(ch_mult)-1).
        nf, ch_mult: VQGAN channels per level, nf * ch_mult[i] (multiples of 32 for GroupNorm(32)).
        res_blocks: ResBlocks per level; attn_resolutions: resolutions with self-attention.
        codebook_size, emb_dim: codebook entries N and latent/code dimension C.
        dim_embd, n_head, n_layers, dim_mlp: Transformer width, heads, depth, MLP width.
        connect_list: resolutions with fidelity (CFT) fusion, e.g. (32, 64, 128, 256).
        default_w: fidelity weight used when ``forward`` gets ``w=None``.
        adain: match the looked-up code features' per-channel mean and std to the (conditioned)
            encoder latent before decoding, as CodeFormer and IQPFR inference do (``adain=True``).
            Training never applies it. A quality-conditioned model whose quality rows are still
            their random initialisation should turn it off: it would copy that noise's statistics
            into the decoder input (see MODEL_CARD.md).
    """

    num_codebooks = 1

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
        default_w: float = 0.5,
        adain: bool = True,
    ) -> None:
        super().__init__()
        ch_mult, attn_resolutions = [int(m) for m in ch_mult], [int(r) for r in attn_resolutions]
        connect_list = [int(r) for r in connect_list]
        self.config = dict(
            img_size=img_size, nf=nf, ch_mult=ch_mult, res_blocks=res_blocks, attn_resolutions=attn_resolutions,
            codebook_size=codebook_size, emb_dim=emb_dim, dim_embd=dim_embd, n_head=n_head, n_layers=n_layers,
            dim_mlp=dim_mlp, connect_list=connect_list, default_w=default_w, adain=bool(adain),
        )
        self.adain = bool(adain)
        levels = len(ch_mult)
        latent = img_size // 2 ** (levels - 1)
        if latent * 2 ** (levels - 1) != img_size:
            raise ValueError(f"img_size {img_size} is not divisible by 2^{levels - 1}")
        level_of = {img_size // 2**i: i for i in range(levels)}
        bad = [r for r in connect_list if r not in level_of]
        if bad:
            raise ValueError(f"connect_list resolutions {bad} must be in {sorted(level_of)}")
        self.img_size, self.emb_dim, self.codebook_size = img_size, emb_dim, codebook_size
        self.latent_hw = (latent, latent)
        self.default_w = default_w
        vq = dict(img_size=img_size, nf=nf, ch_mult=ch_mult, res_blocks=res_blocks,
                  attn_resolutions=attn_resolutions, emb_dim=emb_dim)

        # registration order = official state-dict order
        self.position_emb = nn.Parameter(torch.zeros(latent * latent, dim_embd))
        self.encoder = VQEncoder(**vq)
        self.quantize = VectorQuantizer(codebook_size=codebook_size, emb_dim=emb_dim)
        self.generator = VQGenerator(**vq)
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.ft_layers = nn.ModuleList(TransformerSALayer(dim_embd, n_head, dim_mlp) for _ in range(n_layers))
        self.idx_pred_layer = nn.Sequential(
            nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size * self.num_codebooks, bias=False)
        )
        self.connect_list = connect_list
        self.fuse_convs_dict = nn.ModuleDict(
            {str(r): FuseSFTBlock(nf * ch_mult[level_of[r]], nf * ch_mult[level_of[r]]) for r in connect_list}
        )
        self._fuse_after = {self.generator.level_taps[r]: r for r in connect_list}

    # ------------------------------------------------------------------ building blocks
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of ``lq_feat`` / ``quant_feat``."""
        return (self.emb_dim, *self.latent_hw)

    quality_site_shape = latent_shape  # where plug-and-play quality adapters are added

    def encode(self, lq: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """lq (B, 3, S, S) in [-1, 1] -> lq_feat (B, C, h, w) and skips {r: (B, C_r, r, r)} for
        every r in ``connect_list`` (the encoder features the fidelity fusion uses)."""
        return self.encoder.forward_with_skips(lq, self.connect_list)

    def condition(self, lq_feat: torch.Tensor, quality: float | torch.Tensor | None) -> torch.Tensor:
        """Add the quality condition to lq_feat (B, C, h, w). Plain CodeFormer: identity unless a
        quality adapter is attached (``codeformer+q``)."""
        return apply_quality_adapter(self, lq_feat, quality)

    def code_logits(self, lq_feat: torch.Tensor) -> torch.Tensor:
        """Raw head output (B, h*w, num_codebooks * N) for lq_feat (B, C, h, w); token t = y*w + x."""
        x = self.feat_emb(lq_feat.flatten(2).transpose(1, 2))
        for layer in self.ft_layers:
            x = layer(x, self.position_emb)
        return self.idx_pred_layer(x)

    def predict_logits(self, lq_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (B, h*w, N), hq_logits) for the (already conditioned) lq_feat; hq_logits is
        None for single-codebook models."""
        return self.code_logits(lq_feat), None

    def lookup(
        self,
        indices: torch.Tensor,
        hq_indices: torch.Tensor | None = None,
        *,
        straight_through_from: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Codebook feature (B, C, h, w) for indices (B, h*w).

        The codebook never receives a gradient from this path. With ``straight_through_from=lq_feat``
        the forward value is unchanged and the gradient of anything computed from it is copied to
        lq_feat (so an image loss reaches the encoder).
        """
        quant = self.quantize.lookup(indices, self.latent_hw)
        return quant if straight_through_from is None else straight_through(quant, straight_through_from)

    def decode(
        self, quant_feat: torch.Tensor, skips: dict[int, torch.Tensor], w: float | torch.Tensor = 0.0
    ) -> torch.Tensor:
        """quant_feat (B, C, h, w) -> image (B, 3, S, S), raw. ``w``: float or (B,) fidelity weight in
        [0, 1]; the encoder skips enter the fusion detached (as in CodeFormer). A Python ``w == 0``
        skips the fusion blocks (same numbers as running them with w = 0)."""
        skip_fusion = not isinstance(w, torch.Tensor) and float(w) == 0.0
        x = quant_feat
        w_t = None if skip_fusion else fidelity_weight(w, x.shape[0], x)
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            r = self._fuse_after.get(i)
            if r is not None and w_t is not None:
                x = self.fuse_convs_dict[str(r)](skips[r].detach(), x, w_t)
        return x

    # ------------------------------------------------------------------ inference
    def forward(
        self, lq: torch.Tensor, w: float | torch.Tensor | None = None, quality: float | torch.Tensor | None = None
    ) -> RestoreOutput:
        """Restore aligned faces.

        lq: (B, 3, S, S) in [-1, 1]. w: fidelity weight, float or (B,) tensor in [0, 1]
        (0 = codebook quality, 1 = fidelity; None = ``default_w``). quality: target quality, float
        or (B,) in [0, 1] (None = 0.9); used only by quality-conditioned models.
        Returns RestoreOutput(image (B, 3, S, S) unclamped, logits (B, h*w, N), lq_feat, indices,
        quant_feat (after AdaIN), hq_logits / hq_indices for dual-codebook models).
        """
        w = self.default_w if w is None else w
        lq_feat, skips = self.encode(lq)
        lq_feat = self.condition(lq_feat, quality)
        logits, hq_logits = self.predict_logits(lq_feat)
        indices = logits.argmax(dim=-1)
        hq_indices = None if hq_logits is None else hq_logits.argmax(dim=-1)
        quant = self.lookup(indices, hq_indices, straight_through_from=lq_feat)
        if self.adain:
            quant = adaptive_instance_norm(quant, lq_feat)
        image = self.decode(quant, skips, w)
        return RestoreOutput(
            image=image, logits=logits, lq_feat=lq_feat, indices=indices, quant_feat=quant,
            hq_logits=hq_logits, hq_indices=hq_indices,
        )

    # ------------------------------------------------------------------ checkpoints
    def load_autoencoder_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a stage-I ``VQAutoEncoder`` state dict (``encoder.*``, ``quantize.*``, ``generator.*``)
        strictly into this model's VQGAN parts."""
        own = {k: v for k, v in self.state_dict().items() if k.split(".", 1)[0] in ("encoder", "quantize", "generator")}
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise RuntimeError(f"autoencoder state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(state_dict, strict=False)
