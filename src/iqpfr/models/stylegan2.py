"""StyleGAN2 "clean" generator (the decoder of GFPGAN v1.4) with optional SFT conditions.

State-dict names follow the released GFPGAN v1.4 checkpoint (``stylegan_decoder.*``): ``style_mlp``,
``constant_input``, ``style_conv1``, ``to_rgb1``, ``style_convs.N``, ``to_rgbs.N`` and the stored noise
maps ``noises.noiseK`` (persistent buffers, so checkpoints carry them).

"Clean" means plain PyTorch ops: bilinear resampling (``align_corners=False``) instead of the original
StyleGAN2 FIR filters, and no equalised-learning-rate scaling at run time (the weights are stored
already scaled).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2


class NormStyleCode(nn.Module):
    """Normalise each latent to unit root-mean-square over its features: (B, F) -> (B, F)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


def _resample(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution.

    The official code builds one weight per sample and runs a grouped convolution. We scale the input
    channels by the style and the output channels by the demodulation factor instead, which is the same
    linear map (conv(x * s) * d == conv_{W * s * d}(x)) but runs one ordinary convolution for the whole
    batch (faster, channels-last and ONNX friendly).

    x: (B, in_channels, H, W); style: (B, num_style_feat) -> (B, out_channels, H', W') with H' = 2H when
    ``upsample``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_style_feat: int,
        demodulate: bool = True,
        upsample: bool = False,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        self.padding = kernel_size // 2
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        # stored with the 1/sqrt(fan_in) scale folded in, as in the released checkpoint (leading dim 1)
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size)
            / math.sqrt(in_channels * kernel_size**2)
        )

    def channel_scales(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """style (B, num_style_feat) -> input-channel scale (B, in) and demodulation (B, out) or None.

        The output is conv(x * input_scale) * demodulation (``forward``; also ``iqpfr.kernels``).
        """
        weight = self.weight[0]  # (out, in, k, k)
        scale = self.modulation(style)  # (B, in)
        if not self.demodulate:
            return scale, None
        # sum_{i,k} (W[o,i,k] s[b,i])^2 = sum_i s[b,i]^2 * sum_k W[o,i,k]^2
        energy = (scale * scale) @ weight.pow(2).sum(dim=(2, 3)).t()  # (B, out)
        return scale, torch.rsqrt(energy + self.eps)

    def resample_input(self, x: torch.Tensor) -> torch.Tensor:
        """x doubled in size (bilinear) when ``upsample``, else unchanged."""
        return _resample(x, 2.0) if self.upsample else x

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale, demodulation = self.channel_scales(style)
        out = F.conv2d(self.resample_input(x) * scale[:, :, None, None], self.weight[0], padding=self.padding)
        if demodulation is not None:
            out = out * demodulation[:, :, None, None]
        return out


class StyleConv(nn.Module):
    """Modulated conv, x sqrt(2) gain, noise injection, bias, leaky ReLU (the StyleGAN2 layer)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int, upsample: bool
    ) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, num_style_feat, demodulate=True, upsample=upsample
        )
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """noise: (B or 1, 1, H', W'), broadcast over channels (and batch)."""
        out = self.modulated_conv(x, style) * math.sqrt(2.0)
        out = out + self.weight * noise + self.bias
        return F.leaky_relu(out, LEAKY_SLOPE)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB, plus the bilinearly upsampled previous RGB skip."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            out = out + (_resample(skip, 2.0) if self.upsample else skip)
        return out


class ConstantInput(nn.Module):
    """The learned (1, C, size, size) start tensor, repeated over the batch."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


def stylegan2_channels(channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Feature channels per resolution of the StyleGAN2 generator."""
    wide = int(512 * narrow)
    return {
        4: wide,
        8: wide,
        16: wide,
        32: wide,
        64: int(256 * channel_multiplier * narrow),
        128: int(128 * channel_multiplier * narrow),
        256: int(64 * channel_multiplier * narrow),
        512: int(32 * channel_multiplier * narrow),
        1024: int(16 * channel_multiplier * narrow),
    }


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 "clean" generator with optional spatial feature transform (SFT) conditions.

    Args:
        out_size: output resolution (a power of two >= 8).
        num_style_feat: latent width.
        num_mlp: layers of the style MLP (only used when latents are not given directly).
        channel_multiplier, narrow: channel widths, see ``stylegan2_channels``.
        sft_half: apply SFT conditions to the second half of the channels only (GFPGAN v1.4).
        randomize_noise: draw fresh Gaussian noise on every call instead of using the stored maps.
            Off by default so inference is deterministic (the official ``randomize_noise=False``).
    """

    def __init__(
        self,
        out_size: int = 512,
        num_style_feat: int = 512,
        num_mlp: int = 8,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        sft_half: bool = True,
        randomize_noise: bool = False,
    ) -> None:
        super().__init__()
        log_size = int(math.log2(out_size))
        if 2**log_size != out_size or log_size < 3:
            raise ValueError(f"out_size must be a power of two >= 8, got {out_size}")
        self.num_style_feat = num_style_feat
        self.sft_half = sft_half
        self.randomize_noise = randomize_noise
        self.num_layers = (log_size - 2) * 2 + 1
        self.num_latent = log_size * 2 - 2

        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(LEAKY_SLOPE)]
        self.style_mlp = nn.Sequential(*mlp)

        channels = stylegan2_channels(channel_multiplier, narrow)
        self.constant_input = ConstantInput(channels[4], size=4)
        self.style_conv1 = StyleConv(channels[4], channels[4], 3, num_style_feat, upsample=False)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)

        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = channels[4]
        for level in range(3, log_size + 1):
            out_channels = channels[2**level]
            self.style_convs.append(StyleConv(in_channels, out_channels, 3, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_channels, out_channels, 3, num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(out_channels, num_style_feat, upsample=True))
            in_channels = out_channels

        self.noises = nn.Module()
        for layer in range(self.num_layers):
            res = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise{layer}", torch.randn(1, 1, res, res), persistent=True)

    def stored_noise(self) -> list[torch.Tensor]:
        """The persistent noise maps, (1, 1, R, R) each, one per StyleConv."""
        return [getattr(self.noises, f"noise{i}") for i in range(self.num_layers)]

    def random_noise(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh N(0, 1) maps of the stored shapes, (batch, 1, R, R) each."""
        return [
            torch.randn((batch, *n.shape[1:]), generator=generator, device=n.device, dtype=n.dtype)
            for n in self.stored_noise()
        ]

    def forward(
        self,
        latents: torch.Tensor,
        conditions: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        noise: list[torch.Tensor] | None = None,
        input_is_latent: bool = True,
    ) -> torch.Tensor:
        """Generate images.

        latents: (B, num_latent, F) per-layer latents, or (B, F) one latent for all layers.
        conditions: per resolution 8, 16, ..., out_size a (scale, shift) pair applied after the
            upsampling StyleConv as ``x * scale + shift`` (to the second channel half with ``sft_half``).
        noise: one map per StyleConv; default the stored maps (or random ones with ``randomize_noise``).
        Returns (B, 3, out_size, out_size), raw.
        """
        if not input_is_latent:
            if latents.dim() == 3:
                latents = self.style_mlp(latents.flatten(0, 1)).view_as(latents)
            else:
                latents = self.style_mlp(latents)
        if latents.dim() == 2:
            latents = latents.unsqueeze(1).expand(-1, self.num_latent, -1)
        if noise is None:
            noise = self.random_noise(latents.shape[0]) if self.randomize_noise else self.stored_noise()
        conditions = conditions or []

        out = self.style_conv1(self.constant_input(latents.shape[0]), latents[:, 0], noise[0])
        rgb = self.to_rgb1(out, latents[:, 1])
        for level, to_rgb in enumerate(self.to_rgbs):
            i = 2 * level + 1
            out = self.style_convs[2 * level](out, latents[:, i], noise[i])
            if level < len(conditions):
                out = self._apply_sft(out, *conditions[level])
            out = self.style_convs[2 * level + 1](out, latents[:, i + 1], noise[i + 1])
            rgb = to_rgb(out, latents[:, i + 2], rgb)
        return rgb

    def _apply_sft(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        if not self.sft_half:
            return x * scale + shift
        half = x.shape[1] // 2
        kept, modulated = x[:, :half], x[:, half:]
        return torch.cat([kept, modulated * scale + shift], dim=1)
