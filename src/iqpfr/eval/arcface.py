"""ArcFace ResNet-18 identity embedding, the network behind CodeFormer's / GFPGAN's identity numbers.

Architecture (the ``arcface_resnet18.pth`` layout used by GFPGAN's identity loss): one gray input
channel at 128x128, a 3x3 stem with BatchNorm and PReLU, 2x2 max-pool, four stages of two
"improved residual" blocks (BN, conv3x3, BN, PReLU, conv3x3 with the stage's stride, BN; one PReLU
shared by the block; 1x1 conv + BN shortcut when the shape changes) with 64/128/256/512 channels,
then BN, a 512*8*8 -> 512 linear layer and BatchNorm1d: a 512-d embedding.

Protocol of ``--ids-model arcface``: the whole aligned face (no detection) is converted to BT.601
luma, resized to 128x128 (area when shrinking, bilinear otherwise) and mapped to [-1, 1]; IDS is the
angle in degrees between the embeddings of prediction and GT. Weights: zoo entry ``arcface`` or a
file (``--arcface PATH``), loaded with ``weights_only=True``; a clear error when neither loads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_SIZE = 128
_STAGES = (64, 128, 256, 512)


class _IRBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + shortcut)


class ArcFaceResNet18(nn.Module):
    """``forward`` maps gray faces (B, 1, 128, 128) in [-1, 1] to embeddings (B, 512)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        channels = 64
        for index, width in enumerate(_STAGES, start=1):
            stride = 1 if index == 1 else 2
            setattr(self, f"layer{index}", nn.Sequential(_IRBlock(channels, width, stride), _IRBlock(width, width, 1)))
            channels = width
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, 512)
        self.bn5 = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(torch.flatten(x, 1)))


def load_arcface(weights: str | Path = "arcface", *, offline: bool = False,
                 device: str | torch.device = "cpu") -> ArcFaceResNet18:
    """ArcFaceResNet18 with weights from the zoo or a file; RuntimeError naming what is missing."""
    from iqpfr.weights import WeightsError, resolve_weights

    try:
        path = resolve_weights(weights, offline=offline)
    except (WeightsError, FileNotFoundError) as exc:
        raise RuntimeError(f"ArcFace IDS needs ArcFace ResNet-18 weights ({exc}); pass a file with --arcface PATH "
                           "or use the default dlib identity model (--ids-model dlib)") from None
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("params", state.get("state_dict", state)) if isinstance(state, dict) else state
    except Exception as exc:  # unpickling / safetensors errors of a corrupt or foreign file
        raise RuntimeError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise RuntimeError(f"{path}: not a state dict")
    # checkpoints saved from DataParallel carry a "module." prefix
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = ArcFaceResNet18()
    for key, value in model.state_dict().items():  # files from old PyTorch lack BN step counters
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RuntimeError(f"{path}: not an ArcFace ResNet-18 (IRBlock, no SE) state dict: "
                           f"{str(exc).splitlines()[0]}") from None
    return model.eval().requires_grad_(False).to(device)


def arcface_input(img: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H, W, 3) aligned face -> (1, 1, 128, 128) gray tensor in [-1, 1]."""
    import cv2

    gray = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    interp = cv2.INTER_AREA if min(img.shape[:2]) > INPUT_SIZE else cv2.INTER_LINEAR
    gray = cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)
    return torch.from_numpy(gray / 127.5 - 1.0)[None, None]


def arcface_distances(model: ArcFaceResNet18, preds: list[np.ndarray], gts: list[np.ndarray]) -> list[dict[str, float]]:
    """Per pair: {"ids": angle in degrees, "ids_l2": Euclidean distance} of the ArcFace embeddings."""
    from iqpfr.eval.identity import angle_degrees

    e_pred, e_gt = arcface_embeddings(model, preds), arcface_embeddings(model, gts)
    return [{"ids": angle_degrees(a, b), "ids_l2": float(np.linalg.norm(a - b))} for a, b in zip(e_pred, e_gt)]


@torch.no_grad()
def arcface_embeddings(model: ArcFaceResNet18, images: list[np.ndarray]) -> np.ndarray:
    """(N, 512) float64 embeddings of aligned uint8 RGB faces."""
    device = next(model.parameters()).device
    batch = torch.cat([arcface_input(img) for img in images]).to(device)
    return model(batch).double().cpu().numpy()
