"""GFPGAN v1.4 ("clean" architecture): a U-Net encoder whose features condition a StyleGAN2 decoder.

The encoder maps the degraded face to (a) per-layer StyleGAN2 latents through ``final_linear`` and
(b) per-resolution spatial feature transform (SFT) conditions (scale, shift) from its decoder half.
State-dict names match the released ``GFPGANv1.4.pth`` (``params_ema``), which loads with
``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from iqpfr.models.adapters import apply_quality_adapter
from iqpfr.models.outputs import RestoreOutput
from iqpfr.models.stylegan2 import LEAKY_SLOPE, StyleGAN2Generator

ARCH_NAME = "gfpgan_v1_clean"


class ResampleResBlock(nn.Module):
    """Residual block that halves (``factor=0.5``) or doubles (``factor=2``) the resolution.

    conv3x3 -> lrelu -> bilinear resample -> conv3x3 -> lrelu, plus a bilinearly resampled 1x1 skip.
    """

    def __init__(self, in_channels: int, out_channels: int, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        out = F.interpolate(out, scale_factor=self.factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), LEAKY_SLOPE)
        x = F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return out + self.skip(x)


def unet_channels(channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Feature channels per resolution of the GFPGAN U-Net (half the StyleGAN2 widths)."""
    unet_narrow = narrow * 0.5
    wide = int(512 * unet_narrow)
    return {
        4: wide,
        8: wide,
        16: wide,
        32: wide,
        64: int(256 * channel_multiplier * unet_narrow),
        128: int(128 * channel_multiplier * unet_narrow),
        256: int(64 * channel_multiplier * unet_narrow),
        512: int(32 * channel_multiplier * unet_narrow),
        1024: int(16 * channel_multiplier * unet_narrow),
    }


Conditions = list[tuple[torch.Tensor, torch.Tensor]]


class GFPGANv1Clean(nn.Module):
    """GFPGAN v1.4 generator.

    Args:
        out_size: input and output resolution (power of two).
        num_style_feat: StyleGAN2 latent width.
        channel_multiplier, narrow: channel widths (U-Net uses half of StyleGAN2's).
        num_mlp: layers of the (unused with ``input_is_latent``) style MLP; kept for checkpoint layout.
        input_is_latent: feed the encoder's codes directly as W latents (v1.4: True).
        different_w: one latent per decoder layer (v1.4: True) instead of one shared latent.
        sft_half: SFT on the second half of the decoder channels only (v1.4: True).
        randomize_noise: random decoder noise on every call; default False uses the stored noise maps,
            so inference is deterministic.
    """

    def __init__(
        self,
        out_size: int = 512,
        num_style_feat: int = 512,
        channel_multiplier: int = 2,
        num_mlp: int = 8,
        narrow: float = 1.0,
        input_is_latent: bool = True,
        different_w: bool = True,
        sft_half: bool = True,
        randomize_noise: bool = False,
    ) -> None:
        super().__init__()
        self.config = {
            "arch": ARCH_NAME,
            "out_size": out_size,
            "num_style_feat": num_style_feat,
            "channel_multiplier": channel_multiplier,
            "num_mlp": num_mlp,
            "narrow": narrow,
            "input_is_latent": input_is_latent,
            "different_w": different_w,
            "sft_half": sft_half,
            "randomize_noise": randomize_noise,
        }
        log_size = int(math.log2(out_size))
        if 2**log_size != out_size or log_size < 3:
            raise ValueError(f"out_size must be a power of two >= 8, got {out_size}")
        self.out_size = out_size
        self.num_style_feat = num_style_feat
        self.input_is_latent = input_is_latent
        self.different_w = different_w
        channels = unet_channels(channel_multiplier, narrow)
        levels = range(3, log_size + 1)  # resolutions 8 .. out_size

        self.conv_body_first = nn.Conv2d(3, channels[out_size], 1)
        self.conv_body_down = nn.ModuleList()
        in_channels = channels[out_size]
        for level in range(log_size, 2, -1):
            out_channels = channels[2 ** (level - 1)]
            self.conv_body_down.append(ResampleResBlock(in_channels, out_channels, 0.5))
            in_channels = out_channels
        self.final_conv = nn.Conv2d(in_channels, channels[4], 3, padding=1)

        self.conv_body_up = nn.ModuleList()
        in_channels = channels[4]
        for level in levels:
            out_channels = channels[2**level]
            self.conv_body_up.append(ResampleResBlock(in_channels, out_channels, 2.0))
            in_channels = out_channels
        # intermediate RGB heads, used only for GFPGAN's training losses (kept for the checkpoint layout)
        self.toRGB = nn.ModuleList(nn.Conv2d(channels[2**level], 3, 1) for level in levels)

        num_latent = (2 * log_size - 2) if different_w else 1
        self.final_linear = nn.Linear(channels[4] * 4 * 4, num_latent * num_style_feat)

        self.stylegan_decoder = StyleGAN2Generator(
            out_size=out_size,
            num_style_feat=num_style_feat,
            num_mlp=num_mlp,
            channel_multiplier=channel_multiplier,
            narrow=narrow,
            sft_half=sft_half,
            randomize_noise=randomize_noise,
        )

        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        for level in levels:
            ch = channels[2**level]
            sft_channels = ch if sft_half else 2 * ch
            for branches in (self.condition_scale, self.condition_shift):
                branches.append(
                    nn.Sequential(
                        nn.Conv2d(ch, ch, 3, padding=1),
                        nn.LeakyReLU(LEAKY_SLOPE),
                        nn.Conv2d(ch, sft_channels, 3, padding=1),
                    )
                )

    @property
    def randomize_noise(self) -> bool:
        return self.stylegan_decoder.randomize_noise

    @randomize_noise.setter
    def randomize_noise(self, value: bool) -> None:
        self.stylegan_decoder.randomize_noise = bool(value)
        self.config["randomize_noise"] = bool(value)

    def encode(self, lq: torch.Tensor) -> tuple[torch.Tensor, Conditions]:
        """U-Net pass.

        lq: (B, 3, out_size, out_size) in [-1, 1].
        Returns style_code (B, num_latent, num_style_feat) (num_latent = 2*log2(out_size)-2 with
        ``different_w``, else 1) and the SFT conditions: for resolutions 8 .. out_size a (scale, shift)
        pair of (B, C_r, r, r) tensors.
        """
        feat = F.leaky_relu(self.conv_body_first(lq), LEAKY_SLOPE)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), LEAKY_SLOPE)
        style_code = self.final_linear(feat.flatten(1)).view(lq.shape[0], -1, self.num_style_feat)

        conditions: Conditions = []
        for block, skip, scale_branch, shift_branch in zip(
            self.conv_body_up, reversed(skips), self.condition_scale, self.condition_shift
        ):
            feat = block(feat + skip)
            conditions.append((scale_branch(feat), shift_branch(feat)))
        return style_code, conditions

    def condition(self, style_code: torch.Tensor, quality: float | torch.Tensor | None) -> torch.Tensor:
        """Add the quality condition to style_code (B, num_latent, num_style_feat): identity unless a
        plug-and-play quality adapter is attached (``iqpfr.models.adapters``)."""
        return apply_quality_adapter(self, style_code, quality)

    def decode(
        self,
        style_code: torch.Tensor,
        conditions: Conditions,
        noise: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """StyleGAN2 pass: style_code and conditions from ``encode`` -> (B, 3, out_size, out_size), raw.

        noise: optional explicit noise maps, one per StyleConv (see ``StyleGAN2Generator``).
        """
        latents = style_code if self.different_w else style_code[:, 0]
        return self.stylegan_decoder(latents, conditions, noise=noise, input_is_latent=self.input_is_latent)

    def forward(
        self,
        lq: torch.Tensor,
        w: torch.Tensor | float | None = None,
        quality: torch.Tensor | None = None,
        noise: list[torch.Tensor] | None = None,
    ) -> RestoreOutput:
        """Restore a batch of aligned faces.

        lq: (B, 3, out_size, out_size) in [-1, 1]. ``w`` (fidelity) and ``quality`` are accepted for a
        common model API; ``w`` is ignored, as the official GFPGAN ignores its ``weight`` argument, and
        ``quality`` (float or (B,) in [0, 1], None = 0.9) only matters with a quality adapter attached.
        Returns ``RestoreOutput(image=(B, 3, out_size, out_size))``, not clamped.
        """
        style_code, conditions = self.encode(lq)
        style_code = self.condition(style_code, quality)
        return RestoreOutput(image=self.decode(style_code, conditions, noise=noise))
