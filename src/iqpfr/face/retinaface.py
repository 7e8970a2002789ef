"""RetinaFace (ResNet-50 + FPN + SSH context modules) face detector with 5 landmarks.

Layer names follow the public ``detection_Resnet50_Final.pth`` release (``body.*``, ``fpn.*``,
``ssh1..3.*``, ``ClassHead/BboxHead/LandmarkHead.{0,1,2}.conv1x1.*``), so that file loads strictly.
The network sees a BGR image minus the per-channel mean (104, 117, 123), unscaled; every location of
the three pyramid levels (strides 8, 16, 32) has two square anchors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BGR_MEAN = (104.0, 117.0, 123.0)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
STRIDES = (8, 16, 32)
VARIANCE = (0.1, 0.2)


def _conv_bn(cin: int, cout: int, kernel: int, *, relu: bool) -> nn.Sequential:
    """Conv (no bias) + BatchNorm [+ ReLU]; ResNet-50 RetinaFace uses plain ReLU (leaky slope 0)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ContextModule(nn.Module):
    """SSH context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) receptive fields, concatenated."""

    def __init__(self, channels: int = 256):
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = _conv_bn(channels, half, 3, relu=False)
        self.conv5X5_1 = _conv_bn(channels, quarter, 3, relu=True)
        self.conv5X5_2 = _conv_bn(quarter, quarter, 3, relu=False)
        self.conv7X7_2 = _conv_bn(quarter, quarter, 3, relu=True)
        self.conv7x7_3 = _conv_bn(quarter, quarter, 3, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.conv5X5_1(x)
        wide = self.conv7X7_2(shared)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(shared), self.conv7x7_3(wide)], dim=1))


class FeaturePyramid(nn.Module):
    """Top-down FPN over ResNet stages 2-4: 1x1 lateral convs, nearest up-sampling, 3x3 merges."""

    def __init__(self, in_channels: tuple[int, int, int] = (512, 1024, 2048), channels: int = 256):
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], channels, 1, relu=True)
        self.output2 = _conv_bn(in_channels[1], channels, 1, relu=True)
        self.output3 = _conv_bn(in_channels[2], channels, 1, relu=True)
        self.merge1 = _conv_bn(channels, channels, 3, relu=True)
        self.merge2 = _conv_bn(channels, channels, 3, relu=True)

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> list[torch.Tensor]:
        p5 = self.output3(c5)
        p4 = self.merge2(self.output2(c4) + F.interpolate(p5, size=c4.shape[-2:], mode="nearest"))
        p3 = self.merge1(self.output1(c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class _Head(nn.Module):
    """1x1 conv predicting ``values`` numbers for each of ``anchors`` anchors per location."""

    def __init__(self, values: int, channels: int = 256, anchors: int = 2):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(x.shape[0], -1, self.values)


class _ResNet50Body(nn.Module):
    """torchvision ResNet-50 without its classifier, returning stages 2, 3 and 4."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        return c3, c4, self.layer4(c4)


class RetinaFace(nn.Module):
    """RetinaFace-R50. ``forward(x)`` with x (B, 3, H, W) mean-subtracted BGR returns
    (box deltas (B, A, 4), face probabilities (B, A), landmark deltas (B, A, 10)), A = anchors."""

    def __init__(self):
        super().__init__()
        self.body = _ResNet50Body()
        self.fpn = FeaturePyramid()
        self.ssh1, self.ssh2, self.ssh3 = ContextModule(), ContextModule(), ContextModule()
        self.ClassHead = nn.ModuleList([_Head(2) for _ in STRIDES])
        self.BboxHead = nn.ModuleList([_Head(4) for _ in STRIDES])
        self.LandmarkHead = nn.ModuleList([_Head(10) for _ in STRIDES])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.fpn(*self.body(x))
        features = [ssh(level) for ssh, level in zip((self.ssh1, self.ssh2, self.ssh3), levels)]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], dim=1)
        logits = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], dim=1)
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], dim=1)
        return boxes, logits.softmax(dim=-1)[..., 1], landmarks


def anchor_boxes(height: int, width: int) -> torch.Tensor:
    """(A, 4) anchors (cx, cy, w, h) normalised by the image size, in the network's output order."""
    rows = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        fh, fw = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = torch.meshgrid(torch.arange(fh, dtype=torch.float64), torch.arange(fw, dtype=torch.float64), indexing="ij")
        cx = ((xs + 0.5) * stride / width).reshape(-1, 1).expand(-1, len(sizes))
        cy = ((ys + 0.5) * stride / height).reshape(-1, 1).expand(-1, len(sizes))
        sw = torch.tensor([s / width for s in sizes], dtype=torch.float64).expand_as(cx)
        sh = torch.tensor([s / height for s in sizes], dtype=torch.float64).expand_as(cx)
        rows.append(torch.stack([cx, cy, sw, sh], dim=-1).reshape(-1, 4))
    return torch.cat(rows).float()


def decode(
    anchors: torch.Tensor, box_deltas: torch.Tensor, landmark_deltas: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor-relative predictions -> pixel boxes (A, 4) as x0, y0, x1, y1 and landmarks (A, 5, 2)."""
    centre = anchors[:, :2] + box_deltas[:, :2] * VARIANCE[0] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(box_deltas[:, 2:] * VARIANCE[1])
    scale = torch.tensor([width, height], dtype=anchors.dtype, device=anchors.device)
    boxes = torch.cat([(centre - size / 2) * scale, (centre + size / 2) * scale], dim=1)
    points = anchors[:, None, :2] + landmark_deltas.reshape(-1, 5, 2) * VARIANCE[0] * anchors[:, None, 2:]
    return boxes, points * scale


def load_retinaface(path, device: str | torch.device = "cpu") -> RetinaFace:
    """RetinaFace-R50 with weights from a ``.pth`` (loaded with weights_only=True) or ``.safetensors``."""
    from pathlib import Path

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    # checkpoints saved from nn.DataParallel carry a "module." prefix
    state = {k.removeprefix("module."): v for k, v in state.items()}
    with torch.device("meta"):  # no random init of 27M parameters that the file replaces anyway
        net = RetinaFace()
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval().to(device)


@torch.inference_mode()
def detect_faces(
    net: RetinaFace,
    rgb: np.ndarray,
    *,
    score_threshold: float = 0.9,
    nms_threshold: float = 0.4,
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Faces in an (H, W, 3) uint8 RGB image as (box (4,), score, landmarks (5, 2)) in its pixels."""
    from torchvision.ops import nms

    device = next(net.parameters()).device
    height, width = rgb.shape[:2]
    bgr = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1])).to(device, torch.float32)
    x = (bgr - torch.tensor(BGR_MEAN, device=device)).permute(2, 0, 1)[None]
    box_deltas, scores, landmark_deltas = net(x)
    anchors = anchor_boxes(height, width).to(device)
    boxes, points = decode(anchors, box_deltas[0], landmark_deltas[0], height, width)
    keep = scores[0] > score_threshold
    boxes, points, kept_scores = boxes[keep], points[keep], scores[0][keep]
    order = nms(boxes, kept_scores, nms_threshold)
    return [
        (boxes[i].cpu().numpy().astype(np.float64), float(kept_scores[i]), points[i].cpu().numpy().astype(np.float64))
        for i in order.tolist()
    ]
