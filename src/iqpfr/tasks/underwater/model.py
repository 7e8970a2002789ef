"""A small quality-conditioned enhancement network for whole underwater images (IQPFR "beyond faces").

Two paths, both conditioned on the quality target q in [0, 1]:

* **global colour path**: a thumbnail of the WHOLE image (``thumb`` x ``thumb``) goes through a tiny
  CNN to a global vector g; the quality embedding (``iqpfr.models.conditioning.QualityEmbedding``,
  continuous mode) is added; a head predicts a 3x3 colour matrix + bias (zero-initialised residual
  on the identity) that corrects the per-image colour cast, and FiLM scales/shifts for the local
  path. g is computed once per image, so tiles of one image share it (no seams from global state).
* **local path** (fully convolutional, no normalisation over space, so a tile's output does not
  depend on its neighbours beyond the receptive field): an encoder on [input, colour-corrected
  input] down to 1/4 resolution, FiLM by g, a VQ codebook bottleneck (``VectorQuantizer``, the
  codebook learned first on the REFERENCE images: the "stage I" prior), and a decoder back to full
  resolution with zero-initialised skip fusions from the encoder (CodeFormer's fidelity path) so
  detail passes through.

* **tone head** (``tone=True``): three more per-image numbers from the global path, a detail gain
  d, a luma-contrast gain c and a saturation gain a, applied to the decoded image in the logit
  domain along the axes the training targets move with q (:func:`apply_tone`, the operator of
  ``targets.adjust_quality``: unsharp masking with a 5x5 box blur, luma contrast around the mean
  luma, chroma around the mean colour offset; the means come from the colour-corrected thumbnail,
  so tiles share them). With the head the colour map is computed at the default q for every q:
  the quality target moves detail, contrast and saturation, not the colour balance. Without the
  head (files written before it) the decoder had to build the q-dependent detail out of its 5x5
  full-resolution receptive field and, trained for a CPU hour, did not (the output's UIQM
  sharpness term stayed flat as q rose), while the q-dependent colour map amplified the residual
  cast (greener at high q, which lowers UIQM's contrast term). Zero-initialised (d = c = a = 0 is
  the identity); a local operation, so tiles need only 2 more pixels of context.

``forward(x, quality)`` runs both on one tile/crop with the global vector of ``thumb_source``
(the whole image; the crop itself when omitted). :func:`enhance_image` runs the local path tiled
with :func:`iqpfr.upsample.tiles.run_tiled`.

Left out from IQPFR and why: the dual (common + HQ+) codebook and the code-predicting Transformer
(86 training pairs cannot fit a Transformer on CPU, and a whole-image token sequence would break
tiling); the CFT fidelity weight w (the skip fusion is always on: underwater enhancement must keep
the input's detail); adversarial and perceptual losses (CPU budget).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from iqpfr.models.conditioning import QualityEmbedding, quality_tensor
from iqpfr.models.quantizer import Quantized, VectorQuantizer, straight_through
from iqpfr.models.vqgan import Downsample, Upsample

DEFAULT_QUALITY = 0.5  # overwritten by the trained model's calibration (config "default_quality")


class PlainResBlock(nn.Module):
    """conv3x3-SiLU-conv3x3 + identity, without normalisation (tiles stay independent)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


TONE_EPS = 1.0 / 512.0  # the logit clamp of targets.adjust_quality
_LUMA = (0.299, 0.587, 0.114)


def logit_means(x: torch.Tensor) -> torch.Tensor:
    """(B, 4) of images x (B, 3, H, W): the mean logit luma and the mean logit colour offset
    (logit minus its luma, per channel), the pivots of :func:`apply_tone`."""
    z = torch.logit(x.clamp(TONE_EPS, 1.0 - TONE_EPS))
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    lum = (z * luma).sum(1, keepdim=True)
    return torch.cat([lum.mean(dim=(2, 3)), (z - lum).mean(dim=(2, 3))], dim=1)


def tone_logits(z: torch.Tensor, detail: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor,
                pivots: torch.Tensor | None = None) -> torch.Tensor:
    """The quality-level operator in the logit domain, shared by the training targets
    (``targets.adjust_quality``) and the tone head (:func:`apply_tone`), so the two cannot drift apart.

    z (B, 3, H, W) logits; detail / contrast / saturation: gains broadcastable to (B, 1, 1, 1).
    ``z += detail (z - box5(z))``; ``z += contrast (l - m)``; ``z += saturation (z - l - o)`` with l
    the luma (recomputed after each step), m the mean luma and o the mean colour offset: the image's
    own means when ``pivots`` is None, else pivots (B, 4) = (m, o_r, o_g, o_b) (:func:`logit_means`).
    """
    luma = torch.tensor(_LUMA, dtype=z.dtype, device=z.device).view(1, 3, 1, 1)
    blur = F.avg_pool2d(F.pad(z, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    z = z + detail * (z - blur)
    lum = (z * luma).sum(1, keepdim=True)
    mean = lum.mean(dim=(2, 3), keepdim=True) if pivots is None else pivots[:, :1, None, None]
    z = z + contrast * (lum - mean)  # luma contrast; the colour offsets are kept
    lum = (z * luma).sum(1, keepdim=True)
    offset = (z - lum).mean(dim=(2, 3), keepdim=True) if pivots is None else pivots[:, 1:4, None, None]
    return z + saturation * (z - lum - offset)  # chroma around the mean colour: a cast is not amplified


def apply_tone(x: torch.Tensor, tone: torch.Tensor, pivots: torch.Tensor) -> torch.Tensor:
    """Per-image detail, contrast and saturation gains in the logit domain.

    x (B, 3, H, W) (unclamped), tone (B, 3) = (d, c, a), pivots (B, 4) from :func:`logit_means`:
    :func:`tone_logits` of z = logit(x clamped to [eps, 1 - eps]) (the targets use gains 0.8 s,
    0.35 s, 0.5 s). Returns x plus the change this makes to sigmoid(z); d = c = a = 0 returns x
    exactly (a difference of two sigmoids of one z).
    """
    z0 = torch.logit(x.clamp(TONE_EPS, 1.0 - TONE_EPS))
    d, c, a = (tone[:, i, None, None, None] for i in range(3))
    return x + (torch.sigmoid(tone_logits(z0, d, c, a, pivots)) - torch.sigmoid(z0))


def apply_colour(x: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Per-image affine colour map: x (B, 3, H, W), colour (B, 12) = 3x3 matrix (row-major) + bias."""
    m = colour[:, :9].view(-1, 3, 3) + torch.eye(3, dtype=x.dtype, device=x.device)
    return torch.einsum("bij,bjhw->bihw", m, x) + colour[:, 9:12, None, None]


class UnderwaterEnhanceNet(nn.Module):
    """Quality-conditioned enhancer: (B, 3, H, W) RGB [0, 1] + q (B,) -> (B, 3, H, W) RGB [0, 1].

    Sizes: ``width`` channels at full resolution, 2x at 1/2, 3x at 1/4; ``codebook_size`` codes of
    ``emb_dim``; ``thumb`` is the side of the global thumbnail; H and W must be multiples of 4
    (``enhance_image`` pads). ``tone`` adds the tone head (off by default so that files written
    before it load unchanged; the shipped model has it).
    """

    size_multiple = 4

    def __init__(self, *, width: int = 16, emb_dim: int = 32, codebook_size: int = 256, thumb: int = 64,
                 global_dim: int = 64, num_buckets: int = 8, default_quality: float = DEFAULT_QUALITY,
                 tone: bool = False) -> None:
        super().__init__()
        self.config = dict(width=width, emb_dim=emb_dim, codebook_size=codebook_size, thumb=thumb,
                           global_dim=global_dim, num_buckets=num_buckets, default_quality=default_quality)
        if tone:  # recorded only when on: the config of a file without the head stays as it was
            self.config["tone"] = True
        self.default_quality, self.thumb = float(default_quality), thumb
        w1, w2, w3 = width, 2 * width, 3 * width
        self.film_channels = (w3, w3)
        self.global_net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(32, global_dim, 3, stride=2, padding=1), nn.SiLU(),
        )
        # mean and std pooling: the cast is in the means, the haze in the spread
        self.global_proj = nn.Linear(2 * global_dim + 6, global_dim)
        self.quality_embed = QualityEmbedding((global_dim,), num_buckets=num_buckets, mode="continuous")
        self.global_head = nn.Sequential(nn.SiLU(), nn.Linear(global_dim, global_dim), nn.SiLU())
        self.colour_out = nn.Linear(global_dim, 12)
        self.film_out = nn.Linear(global_dim, 2 * sum(self.film_channels))
        self.tone_out = nn.Linear(global_dim, 3) if tone else None
        for layer in (self.colour_out, self.film_out, self.tone_out):
            if layer is None:
                continue
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

        self.enc_in = nn.Conv2d(6, w1, 3, padding=1)
        self.enc_down1 = nn.Sequential(nn.Conv2d(w1, w2, 1), Downsample(w2))
        self.enc_block1 = PlainResBlock(w2)
        self.enc_down2 = nn.Sequential(nn.Conv2d(w2, w3, 1), Downsample(w3))
        self.enc_block2 = nn.Sequential(PlainResBlock(w3), PlainResBlock(w3))
        self.to_latent = nn.Conv2d(w3, emb_dim, 1)
        self.quantize = VectorQuantizer(codebook_size=codebook_size, emb_dim=emb_dim)
        self.from_latent = nn.Conv2d(emb_dim, w3, 3, padding=1)
        self.dec_block2 = nn.Sequential(PlainResBlock(w3), PlainResBlock(w3))
        self.dec_up2 = nn.Sequential(Upsample(w3), nn.Conv2d(w3, w2, 1))
        self.fuse1 = nn.Conv2d(2 * w2, w2, 1)
        self.dec_block1 = PlainResBlock(w2)
        self.dec_up1 = nn.Sequential(Upsample(w2), nn.Conv2d(w2, w1, 1))
        self.fuse0 = nn.Conv2d(2 * w1 + 3, w1, 1)
        self.dec_out = nn.Conv2d(w1, 3, 3, padding=1)
        for layer in (self.fuse1, self.fuse0):  # fidelity skips start closed (stage-I decoder untouched)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ---- global path -------------------------------------------------------------------------
    def thumbnail(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, thumb, thumb) area-resampled view of whole images (B, 3, H, W)."""
        return F.interpolate(image, size=(self.thumb, self.thumb), mode="area")

    def global_code(self, image: torch.Tensor, quality: torch.Tensor | float | None = None) -> dict[str, torch.Tensor]:
        """Per-image conditioning of whole images (B, 3, H, W): {'colour': (B, 12), 'film': (B, F)}
        and, with the tone head, 'tone': (B, 3) and 'pivots': (B, 4)."""
        thumb = self.thumbnail(image)
        feat = self.global_net(thumb)
        stats = torch.cat([thumb.mean(dim=(2, 3)), thumb.std(dim=(2, 3))], dim=1)
        g0 = self.global_proj(torch.cat([feat.mean(dim=(2, 3)), feat.std(dim=(2, 3)), stats], dim=1))
        q = quality_tensor(quality, image.shape[0], self.default_quality, image.device)
        g = self.global_head(g0 + self.quality_embed(q))
        if self.tone_out is None:
            return {"colour": self.colour_out(g), "film": self.film_out(g)}
        q0 = quality_tensor(None, image.shape[0], self.default_quality, image.device)
        colour = self.colour_out(self.global_head(g0 + self.quality_embed(q0)))
        return {"colour": colour, "film": self.film_out(g), "tone": self.tone_out(g),
                "pivots": logit_means(apply_colour(thumb, colour))}

    def _film(self, code: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out, start = [], 0
        for c in self.film_channels:
            gamma = code["film"][:, start:start + c, None, None]
            beta = code["film"][:, start + c:start + 2 * c, None, None]
            out.append((1.0 + gamma, beta))
            start += 2 * c
        return out

    # ---- local path --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, code: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Latent (B, emb_dim, H/4, W/4), skip features and the colour-corrected input (B, 3, H, W).

        ``code`` None: the stage-I autoencoder on a reference image (no colour map, no FiLM).
        """
        base = x if code is None else apply_colour(x, code["colour"])
        f0 = self.enc_in(torch.cat([x, base], dim=1))
        f1 = self.enc_block1(self.enc_down1(f0))
        f2 = self.enc_block2(self.enc_down2(f1))
        if code is not None:
            gamma, beta = self._film(code)[0]
            f2 = f2 * gamma + beta
        return self.to_latent(f2), [f0, f1], base

    def decode(self, zq: torch.Tensor, skips: list[torch.Tensor] | None, base: torch.Tensor | None,
               code: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """Image (B, 3, H, W), unclamped, from quantised latents (and the fidelity skips)."""
        h = self.from_latent(zq)
        if code is not None:
            gamma, beta = self._film(code)[1]
            h = h * gamma + beta
        h = self.dec_up2(self.dec_block2(h))
        if skips is not None:
            h = h + self.fuse1(torch.cat([h, skips[1]], dim=1))
        h = self.dec_up1(self.dec_block1(h))
        if skips is not None:
            h = h + self.fuse0(torch.cat([h, skips[0], base], dim=1))
        out = self.dec_out(F.silu(h))
        return out if base is None else out + base

    def autoencode(self, reference: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """Stage I: reference (B, 3, H, W) -> reconstruction through the codebook alone."""
        z, _, _ = self.encode(reference, None)
        quant = self.quantize(z)
        return self.decode(quant.quant, None, None, None), quant

    def forward_local(self, x: torch.Tensor, code: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Quantized]:
        """Enhanced tile (B, 3, H, W) unclamped and the quantiser record, given the global ``code``."""
        z, skips, base = self.encode(x, code)
        # nearest codes of the frozen prior; straight-through so the encoder (not the codebook) learns
        indices = self.quantize.nearest(z.detach(), self.quantize.embedding.weight)
        zq = self.quantize.rows(self.quantize.embedding.weight, indices, z.shape[-2:])
        commit = ((zq.detach() - z) ** 2).flatten(1).mean(1)
        quant = Quantized(straight_through(zq, z), indices, commit, torch.zeros(()))
        out = self.decode(quant.quant, skips, base, code)
        if "tone" in code:
            out = apply_tone(out, code["tone"], code["pivots"])
        return out, quant

    def forward(self, x: torch.Tensor, quality: torch.Tensor | float | None = None,
                thumb_source: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, 3, H, W) RGB [0, 1] -> enhanced (B, 3, H, W) in [0, 1]; H, W multiples of 4."""
        code = self.global_code(x if thumb_source is None else thumb_source, quality)
        out, _ = self.forward_local(x, code)
        return out.clamp(0.0, 1.0)


def enhance_image(model: UnderwaterEnhanceNet, image: torch.Tensor, quality: float | None = None, *,
                  tile: int = 512, overlap: int = 32,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Enhance one whole image (1, 3, H, W) RGB [0, 1] of any size -> (1, 3, H, W) in [0, 1] on the CPU.

    The global colour code comes from the whole image; the local path runs in ``tile`` x ``tile``
    windows with ``overlap`` pixels of context blended by :func:`iqpfr.upsample.tiles.run_tiled`
    (``tile`` <= 0: one window).
    """
    with torch.no_grad():
        code = model.global_code(image, quality)

        def network(batch: torch.Tensor) -> torch.Tensor:
            expanded = {k: v.expand(batch.shape[0], -1) for k, v in code.items()}
            return model.forward_local(batch, expanded)[0]

        from iqpfr.upsample.tiles import run_tiled

        out = run_tiled(network, image, scale=1, tile=tile, overlap=overlap,
                        size_multiple=model.size_multiple, progress=progress)
    return out.clamp(0.0, 1.0)
