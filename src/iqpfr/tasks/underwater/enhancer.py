"""``UnderwaterEnhancer``: the API of ``iqpfr enhance --task underwater``.

    from iqpfr.tasks.underwater import UnderwaterEnhancer
    enhancer = UnderwaterEnhancer.from_pretrained()          # the shipped LSUI weights
    out = enhancer.enhance(rgb_uint8, quality=0.8)           # (H, W, 3) uint8 -> same

``quality`` is the quality target q in [0, 1] (None: the model's default, the calibrated level of
the training references, which gives the best fidelity); higher q raises UIQM/UCIQE (contrast,
colourfulness, sharpness). Images of any size run tiled with blended overlaps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqpfr.tasks.underwater.model import UnderwaterEnhanceNet, enhance_image

WEIGHTS_NAME = "underwater-lsui.safetensors"


def default_weights() -> Path:
    """The shipped weight file (``iqpfr/weights/underwater-lsui.safetensors``)."""
    return Path(__file__).resolve().parents[2] / "weights" / WEIGHTS_NAME


class UnderwaterEnhancer:
    """A loaded enhancer; ``enhance`` takes uint8/uint16 (H, W, 3) arrays, ``LoadedImage``s or
    (1, 3, H, W) float tensors in [0, 1] and returns the same kind."""

    def __init__(self, model: UnderwaterEnhanceNet, *, device: str | torch.device = "cpu", tile: int = 512,
                 overlap: int = 32, info: dict[str, Any] | None = None) -> None:
        if tile < 0 or overlap < 0:
            raise ValueError(f"tile and overlap must be >= 0, got {tile}, {overlap}")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.tile, self.overlap = int(tile), int(overlap)
        self.info = info or {}

    @classmethod
    def from_pretrained(cls, weights: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                        **kwargs: Any) -> UnderwaterEnhancer:
        """Load a self-describing ``.safetensors`` (default: the shipped one); ValueError/FileNotFoundError
        name the file when it cannot be used."""
        from iqpfr.weights.checkpoint import load_model, read_model_config

        path = Path(weights) if weights is not None else default_weights()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such weight file")
        model = load_model(path, device=device)
        if not isinstance(model, UnderwaterEnhanceNet):
            raise ValueError(f"{path}: holds a {type(model).__name__}, not an underwater enhancer")
        config = read_model_config(path)
        info = {"weights": str(path), "calibration": config.get("calibration"), "split": config.get("split")}
        return cls(model, device=device, info=info, **kwargs)

    @property
    def default_quality(self) -> float:
        return float(self.model.default_quality)

    @property
    def description(self) -> str:
        return f"{Path(self.info.get('weights', 'underwater')).name} (default q {self.default_quality:.3f})"

    def enhance_tensor(self, image: torch.Tensor, quality: float | None = None) -> torch.Tensor:
        """(1, 3, H, W) float RGB [0, 1] -> enhanced (1, 3, H, W) float32 on the CPU."""
        if quality is not None and not 0.0 <= float(quality) <= 1.0:
            raise ValueError(f"quality target must be in [0, 1], got {quality}")
        if image.dim() != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"expected one RGB image (1, 3, H, W), got {tuple(image.shape)}")
        if min(image.shape[-2:]) < 4:
            raise ValueError(f"image too small to enhance: {image.shape[-1]}x{image.shape[-2]}")
        return enhance_image(self.model, image.to(self.device, torch.float32), quality,
                             tile=self.tile, overlap=self.overlap)

    def enhance(self, image: Any, quality: float | None = None) -> Any:
        """Enhance an array, ``LoadedImage`` or tensor; returns the same kind (alpha kept)."""
        from iqpfr.io import LoadedImage

        if isinstance(image, torch.Tensor):
            return self.enhance_tensor(image, quality)
        if isinstance(image, LoadedImage):
            pixels = self.enhance(image.pixels, quality)
            return image.with_pixels(pixels, image.alpha)
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected an (H, W, 3) uint8 or uint16 array, got {array.shape} {array.dtype}")
        peak = 65535.0 if array.dtype == np.uint16 else 255.0
        tensor = torch.from_numpy(array.astype(np.float32) / peak).permute(2, 0, 1)[None]
        out = self.enhance_tensor(tensor, quality)[0].permute(1, 2, 0).numpy()
        return np.round(out * peak).astype(array.dtype)
