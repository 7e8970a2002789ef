"""VQGAN encoder and generator of CodeFormer (method.md §3.1), with every size a constructor argument.

The ``blocks`` lists keep the official module order, so state-dict keys are ``encoder.blocks.N.*``
and ``generator.blocks.N.*`` exactly as in the released checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def normalize(channels: int) -> nn.GroupNorm:
    """GroupNorm(32 groups, eps 1e-6), the VQGAN normalisation (eps matters at the 1e-4 level)."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    # the fused kernel: same function as x * sigmoid(x) (within 5e-7), one pass over memory instead of three
    return F.silu(x)


class ResBlock(nn.Module):
    """GroupNorm-swish-conv3x3, twice, plus a 1x1 projection of the input when channels change."""

    def __init__(self, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1)
        self.norm2 = normalize(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        if in_channels != out_channels:
            self.conv_out = nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.in_channels != self.out_channels:
            x = self.conv_out(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (the VQGAN non-local block).

    Uses ``scaled_dot_product_attention`` so fused kernels apply on GPU; the scale is C^-1/2.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, HW, C)
            return t.reshape(b, 1, c, h * w).transpose(2, 3)

        out = F.scaled_dot_product_attention(tokens(self.q(y)), tokens(self.k(y)), tokens(self.v(y)))
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one zero column/row on the right/bottom."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VQEncoder(nn.Module):
    """Image (B, in_channels, S, S) -> latent (B, emb_dim, S/2^(L-1), S/2^(L-1)), L = len(ch_mult).

    ``level_taps[r]`` is the index of the block whose output is the skip feature at resolution r
    (the last ResBlock of that level, matching CodeFormer's hard-coded {512: 2, ..., 16: 18}).
    """

    def __init__(
        self,
        *,
        img_size: int,
        nf: int,
        ch_mult: Sequence[int],
        res_blocks: int,
        attn_resolutions: Sequence[int],
        emb_dim: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, nf, 3, stride=1, padding=1)]
        self.level_taps: dict[int, int] = {}
        res, ch_in = img_size, nf
        for level, mult in enumerate(ch_mult):
            ch_out = nf * mult
            for _ in range(res_blocks):
                blocks.append(ResBlock(ch_in, ch_out))
                self.level_taps[res] = len(blocks) - 1
                ch_in = ch_out
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch_in))
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(ch_in))
                res //= 2
        blocks += [ResBlock(ch_in), AttnBlock(ch_in), ResBlock(ch_in), normalize(ch_in)]
        blocks.append(nn.Conv2d(ch_in, emb_dim, 3, stride=1, padding=1))
        self.blocks = nn.ModuleList(blocks)
        self.latent_resolution = res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def forward_with_skips(self, x: torch.Tensor, resolutions: Sequence[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Latent plus the skip features at the given resolutions, {resolution: (B, C_r, r, r)}."""
        wanted = {self.level_taps[r]: r for r in resolutions}
        skips: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                skips[wanted[i]] = x
        return x, skips


class VQGenerator(nn.Module):
    """Latent (B, emb_dim, s, s) -> image (B, out_channels, s*2^(L-1), ...), mirror of ``VQEncoder``.

    ``level_taps[r]`` is the block after which the fidelity fusion at resolution r acts: the first
    ResBlock after upsampling to r (CodeFormer's {16: 6, 32: 9, ..., 512: 21}; at the lowest
    resolution the last ResBlock of that level).
    """

    def __init__(
        self,
        *,
        img_size: int,
        nf: int,
        ch_mult: Sequence[int],
        res_blocks: int,
        attn_resolutions: Sequence[int],
        emb_dim: int,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        res = img_size // 2 ** (len(ch_mult) - 1)
        ch_in = nf * ch_mult[-1]
        blocks: list[nn.Module] = [nn.Conv2d(emb_dim, ch_in, 3, stride=1, padding=1)]
        blocks += [ResBlock(ch_in), AttnBlock(ch_in), ResBlock(ch_in)]
        self.level_taps: dict[int, int] = {}
        for level in reversed(range(len(ch_mult))):
            ch_out = nf * ch_mult[level]
            for j in range(res_blocks):
                blocks.append(ResBlock(ch_in, ch_out))
                if j == 0 or level == len(ch_mult) - 1:  # the bottom level keeps its last ResBlock
                    self.level_taps[res] = len(blocks) - 1
                ch_in = ch_out
                if res in attn_resolutions:
                    blocks.append(AttnBlock(ch_in))
            if level != 0:
                blocks.append(Upsample(ch_in))
                res *= 2
        blocks += [normalize(ch_in), nn.Conv2d(ch_in, out_channels, 3, stride=1, padding=1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x
