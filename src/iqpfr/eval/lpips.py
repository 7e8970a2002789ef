"""LPIPS (Zhang et al. 2018), VGG-16 variant v0.1: learned perceptual distance, lower is better.

Architecture: the five ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of an ImageNet VGG-16
(torchvision layer layout), each unit-normalised over channels, squared differences weighted by a
learned non-negative 1x1 convolution per layer, averaged over space and summed over layers. Inputs
are shifted and scaled by LPIPS's fixed constants first.

Weights: zoo entries ``vgg16-imagenet`` (backbone) and ``lpips-vgg-v0.1`` (the five linear layers,
published as ``lin{i}.model.1.weight``), both sha256-checked. Without them :func:`load_lpips_vgg`
raises a clear error; there is no silent fallback.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

LAYER_CHANNELS = (64, 128, 256, 512, 512)
# indices (exclusive ends) of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's vgg16().features
_SLICE_ENDS = (4, 9, 16, 23, 30)


# VGG-16 configuration "D": conv widths, "M" = 2x2 max-pool; the last max-pool is not needed
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_features() -> nn.Sequential:
    """VGG-16 convolutional trunk up to relu5_3, indexed like torchvision's ``vgg16().features``."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    return nn.Sequential(*layers)


class LPIPSVGG(nn.Module):
    """``forward(x, y)`` with images (B, 3, H, W) in [-1, 1] returns distances (B,)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LAYER_CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def _layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        x = (x - self.shift) / self.scale
        for end in _SLICE_ENDS:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy, lin in zip(self._layer_outputs(x), self._layer_outputs(y), self.lins):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total


def _torch_state(path: Path) -> dict[str, torch.Tensor]:
    from iqpfr.eval.fid import _load_state_dict

    return _load_state_dict(path)


def load_lpips_vgg(backbone: str | Path = "vgg16-imagenet", linear: str | Path = "lpips-vgg-v0.1", *,
                   offline: bool = False, device: str | torch.device = "cpu") -> LPIPSVGG:
    """LPIPSVGG with published weights (zoo names or files); RuntimeError naming what is missing."""
    from iqpfr.weights import WeightsError, resolve_weights

    try:
        backbone_path = resolve_weights(backbone, offline=offline)
        linear_path = resolve_weights(linear, offline=offline)
    except (WeightsError, FileNotFoundError) as exc:
        raise RuntimeError(f"LPIPS needs the VGG-16 and LPIPS v0.1 weights: {exc}") from None
    model = LPIPSVGG()
    vgg = {k[len("features."):]: v for k, v in _torch_state(backbone_path).items() if k.startswith("features.")}
    try:
        model.features.load_state_dict({k: v for k, v in vgg.items() if int(k.split(".")[0]) < _SLICE_ENDS[-1]})
    except RuntimeError as exc:
        raise RuntimeError(f"{backbone_path}: not VGG-16 weights: {str(exc).splitlines()[0]}") from None
    lin_state = _torch_state(linear_path)
    lins = {}
    for i in range(len(LAYER_CHANNELS)):
        for key in (f"lin{i}.model.1.weight", f"lin{i}.weight", f"lins.{i}.weight"):
            if key in lin_state:
                lins[f"{i}.weight"] = lin_state[key]
                break
        else:
            raise RuntimeError(f"{linear_path}: no LPIPS linear weights for layer {i} (lin{i}.model.1.weight)")
    model.lins.load_state_dict(lins)
    return model.eval().requires_grad_(False).to(device)
