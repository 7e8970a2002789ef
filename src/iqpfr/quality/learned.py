"""``face-iqa``: the project's small, differentiable face-quality network (trained offline, shipped).

No learned NR-IQA weights can be downloaded in the training environment, and the stage-II quality
loss needs a differentiable model, so iqpfr trains its own: a small plain CNN (the shipped one has
16-32-64-128 channels, 0.31 M parameters, 1.2 MB in float32) that ranks the same face under blind degradations of different
strength (see :mod:`iqpfr.quality.learned_train`). Any input size works: images are resized
(antialiased, differentiable) to 256x256, the resolution of the training faces. The score is about
1 for a clean FFHQ-like face and falls towards 0 as the degradation strength grows (higher is better).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from iqpfr.quality.base import QualityScorer

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "face_quality.safetensors"


class FaceQualityNet(nn.Module):
    """Plain CNN: stem conv + stride-2 stages + global mean/std pooling + MLP head.

    ``forward(x)``: x (B, 3, H, W) in [-1, 1] at the working resolution -> (B,) raw scores.
    No normalisation layers, so the output does not depend on the batch.
    """

    def __init__(self, *, widths: tuple[int, ...] = (16, 32, 64, 128), stem_width: int = 16,
                 head_width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem_width, 3, padding=1)
        stages = []
        c_in = stem_width
        for i, c in enumerate(widths):
            layers = [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            if i > 0:  # the first (full-resolution) stage stays single-conv to keep it cheap
                layers += [nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2)]
            stages.append(nn.Sequential(*layers))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Linear(2 * c_in, head_width), nn.LeakyReLU(0.2), nn.Linear(head_width, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # variance-preserving init: with PyTorch's default init this plain (norm-free) stack shrinks
        # its signal layer by layer and the ranking loss stays flat for hundreds of steps
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(F.leaky_relu(self.stem(x), 0.2))
        # mean and std pooling: "how much detail / noise" is a statistic of the whole face
        pooled = torch.cat([h.mean(dim=(2, 3)), h.flatten(2).std(dim=2)], dim=1)
        return self.head(pooled).squeeze(1)


def resize_for_net(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, size, size) in [-1, 1]; antialiased and differentiable."""
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return images * 2.0 - 1.0


def load_face_quality_net(path: str | Path = DEFAULT_WEIGHTS) -> tuple[FaceQualityNet, dict]:
    """Load a ``FaceQualityNet`` from safetensors; its architecture and metadata travel in the header."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: face-quality weights not found")
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    arch = json.loads(meta.get("arch", "{}"))
    net = FaceQualityNet(widths=tuple(arch.get("widths", (16, 32, 64, 128))),
                         stem_width=int(arch.get("stem_width", 16)), head_width=int(arch.get("head_width", 64)))
    net.load_state_dict(load_file(str(path)))
    net.eval()
    return net, meta


def save_face_quality_net(net: FaceQualityNet, path: str | Path, metadata: dict[str, str]) -> Path:
    """Write weights + architecture + provenance (all strings) atomically as safetensors."""
    from safetensors.torch import save_file

    from iqpfr.utils.fs import atomic_path

    arch = {"widths": [m[0].out_channels for m in net.stages], "stem_width": net.stem.out_channels,
            "head_width": net.head[0].out_features}
    meta = {"arch": json.dumps(arch), **{k: str(v) for k, v in metadata.items()}}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


class FaceIQA(QualityScorer):
    """The shipped face-quality scorer: higher is better, about [0, 1], differentiable.

    Args:
        weights: a safetensors file written by ``iqpfr iqa train`` (default: the shipped weights).
        input_size: working resolution; by default the one stored with the weights (256).
    """

    name = "face-iqa"
    higher_better = True
    differentiable = True
    range = (0.0, 1.0)

    def __init__(self, weights: str | Path | None = None, input_size: int | None = None) -> None:
        super().__init__()
        self.weights_path = Path(weights) if weights else DEFAULT_WEIGHTS
        self.net, self.metadata = load_face_quality_net(self.weights_path)
        for p in self.net.parameters():
            p.requires_grad_(False)  # a frozen prior: gradients go to the images only
        self.input_size = int(input_size or self.metadata.get("input_size", 256))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(resize_for_net(images, self.input_size))

    def extra_info(self) -> dict:
        return {"weights": self.weights_path.name, "input_size": self.input_size,
                "trained": self.metadata.get("trained", "")}
