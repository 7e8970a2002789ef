"""Super-resolution networks of the Real-ESRGAN family: RRDBNet (ESRGAN) and SRVGGNetCompact.

Both keep the parameter names of the Real-ESRGAN releases (``conv_first``, ``body.N.rdb1.conv1``,
``conv_up1``, ... and ``body.N`` for the compact net), so ``RealESRGAN_x4plus.pth`` and
``realesr-animevideov3.pth`` load with ``strict=True``. Inputs are RGB in [0, 1], (B, 3, H, W);
outputs (B, 3, s H, s W), not clamped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# residual scaling of ESRGAN's dense blocks (a fixed constant of the architecture)
RESIDUAL_SCALE = 0.2
LEAKY_SLOPE = 0.2


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions; the last one's output, scaled by 0.2, is added to the input."""

    def __init__(self, *, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), LEAKY_SLOPE))
        return self.conv5(torch.cat(features, 1)) * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Three dense blocks in a row with a scaled residual around them (Residual-in-Residual)."""

    def __init__(self, *, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """ESRGAN's generator as Real-ESRGAN trains it.

    scale: 4 (the trunk runs at input resolution, then two nearest x2 + conv steps); 2 and 1 first
    pixel-unshuffle the input by 2 / 4 (so ``conv_first`` sees 12 / 48 channels) and still up-sample
    x4, as the x2plus release does. num_block: 23 for x4plus, 6 for x4plus-anime.
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.config = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, scale=scale, num_feat=num_feat,
                           num_block=num_block, num_grow_ch=num_grow_ch)
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat=num_feat, num_grow_ch=num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (pixel-unshuffle)."""
        return self.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2.0, mode="nearest")), LEAKY_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), LEAKY_SLOPE))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact VGG-style net: a plain chain of 3x3 convolutions and PReLUs at input
    resolution, a pixel shuffle, plus the nearest-neighbour up-sampled input as a residual.

    ``body`` holds conv, PReLU, (conv, PReLU) x num_conv, conv, the layout of the releases.
    """

    def __init__(
        self, *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16, upscale: int = 4
    ):
        super().__init__()
        self.config = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_conv=num_conv,
                           upscale=upscale)
        self.scale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.Sequential(*layers)
        self.upsampler = nn.PixelShuffle(upscale)

    size_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=float(self.scale), mode="nearest")
        return self.upsampler(self.body(x)) + base


# Named sizes (the released networks and a tiny one for tests): name -> ("module:Class", kwargs).
SR_ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "realesrgan-x4plus": ("iqpfr.models.rrdbnet:RRDBNet", dict(num_block=23, scale=4)),
    "realesrgan-x4plus-anime": ("iqpfr.models.rrdbnet:RRDBNet", dict(num_block=6, scale=4)),
    "realesrgan-x2plus": ("iqpfr.models.rrdbnet:RRDBNet", dict(num_block=23, scale=2)),
    "realesr-animevideov3": ("iqpfr.models.rrdbnet:SRVGGNetCompact", dict(num_conv=16, upscale=4)),
    "rrdbnet-tiny": ("iqpfr.models.rrdbnet:RRDBNet", dict(num_feat=16, num_grow_ch=8, num_block=1, scale=4)),
}


def create_sr_model(name: str, **overrides) -> nn.Module:
    """Build the super-resolution network ``name`` (see ``SR_ARCHITECTURES``), randomly initialised."""
    if name not in SR_ARCHITECTURES:
        raise ValueError(f"unknown super-resolution network {name!r}; known: {', '.join(sorted(SR_ARCHITECTURES))}")
    cls_path, kwargs = SR_ARCHITECTURES[name]
    cls = {"iqpfr.models.rrdbnet:RRDBNet": RRDBNet, "iqpfr.models.rrdbnet:SRVGGNetCompact": SRVGGNetCompact}[cls_path]
    model = cls(**{**kwargs, **overrides})
    model.preset = name
    return model
