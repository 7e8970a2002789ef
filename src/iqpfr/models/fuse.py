"""Controllable feature transformation (CFT) and AdaIN re-normalisation (method.md §3.5-3.6)."""

from __future__ import annotations

import torch
from torch import nn

from iqpfr.models.vqgan import ResBlock


def adaptive_instance_norm(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give ``content`` (B, C, h, w) the per-channel mean and std of ``style`` (B, C, h, w).

    Statistics over h*w with the unbiased variance plus ``eps``, as CodeFormer's inference does.
    """
    b, c = content.shape[:2]

    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = t.reshape(b, c, -1)
        return flat.mean(dim=2).view(b, c, 1, 1), (flat.var(dim=2) + eps).sqrt().view(b, c, 1, 1)

    c_mean, c_std = stats(content)
    s_mean, s_std = stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


def fidelity_weight(w: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``w`` (float, () or (B,) tensor) as a (B, 1, 1, 1) tensor matching ``like``'s dtype/device."""
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
    return w.reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1)


class FuseSFTBlock(nn.Module):
    """F_out = F_dec + w * (F_dec * scale + shift), with scale/shift predicted from [F_enc, F_dec].

    ``w`` = 0 returns ``F_dec`` unchanged (the pure codebook path); 1 is full fidelity.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.encode_enc = ResBlock(2 * in_channels, out_channels)

        def branch() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(out_channels, out_channels, 3, padding=1),
            )

        self.scale = branch()
        self.shift = branch()

    def forward(self, enc_feat: torch.Tensor, dec_feat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """enc_feat, dec_feat (B, C, r, r); w (B, 1, 1, 1) -> (B, C, r, r)."""
        f = self.encode_enc(torch.cat([enc_feat, dec_feat], dim=1))
        return dec_feat + w * (dec_feat * self.scale(f) + self.shift(f))
