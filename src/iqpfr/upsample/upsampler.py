"""``Upsampler``: a super-resolution network (Real-ESRGAN) applied to whole images, tiled.

    up = Upsampler.from_pretrained("realesrgan-x4plus")     # converted from the registry package
    big = up.upscale(pixels, 2.0)                             # (H, W, 3) uint8/uint16/float -> (2H, 2W, 3)

The network runs at its own scale (x4); other output scales are a resize of its output (area
filter going down, bicubic going up). CPU: fp32, optionally through iqpfr's Winograd kernels;
CUDA: fp16 by default, windows batched.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from iqpfr.upsample.tiles import run_tiled

DEFAULT_UPSAMPLER = "realesrgan-x4plus"
DEFAULT_TILE = 400
DEFAULT_OVERLAP = 16


class Upsampler:
    """A super-resolution network with tiling, device and precision settings.

    model: maps (B, 3, h, w) RGB in [0, 1] to (B, 3, s h, s w); ``model.scale`` is s.
    tile: window core side in input pixels (0: the whole image at once); overlap: context pixels
    around each core. half: fp16 on CUDA (default True there; ignored on the CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int | None = None,
        half: bool | None = None,
        name: str = "",
    ):
        from iqpfr.utils.device import resolve_device

        if tile < 0 or overlap < 0:
            raise ValueError(f"tile and overlap must be >= 0, got {tile}, {overlap}")
        self.device = resolve_device(device)
        self.half = bool(half if half is not None else self.device.type == "cuda") and self.device.type == "cuda"
        self.model = model.eval().to(self.device)
        if self.half:
            self.model = self.model.half()
        self.scale = int(getattr(model, "scale", 4))
        self.size_multiple = int(getattr(model, "size_multiple", 1))
        self.tile, self.overlap = int(tile), int(overlap)
        self.batch_size = batch_size or (4 if self.device.type == "cuda" else 1)
        self.name = name or type(model).__name__
        self._lock = threading.Lock()  # photos are pasted on worker threads; one network call at a time

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_UPSAMPLER,
        *,
        device: str | torch.device = "auto",
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        offline: bool = False,
        cpu_kernels: bool = False,
        half: bool | None = None,
    ) -> Upsampler:
        """Load a zoo name (``realesrgan-x4plus``, ...), an iqpfr ``.safetensors`` or an official ``.pth``.

        ``cpu_kernels`` routes the 3x3 convolutions through iqpfr's Winograd kernels (CPU, fp32).
        Raises ``iqpfr.weights.WeightsError`` (e.g. the registry package is missing) with a one-line message.
        """
        from iqpfr.weights.realesrgan import load_sr_model

        model = load_sr_model(name_or_path, offline=offline)
        upsampler = cls(model, device=device, tile=tile, overlap=overlap, half=half, name=os.fspath(name_or_path))
        if cpu_kernels and upsampler.device.type == "cpu":
            from iqpfr.kernels.modules import use_cpu_kernels

            use_cpu_kernels(upsampler.model)
            upsampler.model = upsampler.model.to(memory_format=torch.channels_last)
        return upsampler

    def _network(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, torch.float16 if self.half else torch.float32)
        if self.device.type == "cpu":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self.model(batch)

    @torch.inference_mode()
    def upscale_tensor(self, image: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """(1, 3, H, W) RGB in [0, 1] -> (1, 3, s H, s W) float32 in [0, 1] on the CPU, at the network's scale s."""
        with self._lock:
            out = run_tiled(self._network, image, scale=self.scale, tile=self.tile, overlap=self.overlap,
                            batch_size=self.batch_size, size_multiple=self.size_multiple, progress=progress)
        return out.clamp_(0.0, 1.0)

    def __call__(self, face: np.ndarray, factor: int) -> np.ndarray:
        """Face up-sampling for ``paste_faces``: (S, S, 3) float in [0, 1] -> (factor S, factor S, 3)."""
        return self.upscale(face, float(factor))

    def upscale(self, pixels: np.ndarray, outscale: float | None = None) -> np.ndarray:
        """(H, W[, C]) image (uint8, uint16 or float in [0, 1]; C = 1, 3 or 4) up-scaled by ``outscale``.

        Returns the same dtype and channel count at (round(H * outscale), round(W * outscale))
        (``outscale`` None: the network's scale). Colour goes through the network; an alpha
        channel is resized bicubically; a single channel is run as gray RGB and averaged back.
        """
        import cv2

        array = np.asarray(pixels)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise ValueError(f"upscale takes (H, W), (H, W, 1|3|4) images, got {array.shape}")
        scale = float(self.scale if outscale is None else outscale)
        if not scale > 0:
            raise ValueError(f"outscale must be positive, got {outscale}")
        dtype = array.dtype
        top = 65535.0 if dtype == np.uint16 else 255.0 if dtype == np.uint8 else 1.0
        data = array.astype(np.float32) / top
        single = data.ndim == 2 or data.shape[2] == 1
        rgb = np.repeat(data.reshape(*data.shape[:2], 1), 3, axis=2) if single else data[:, :, :3]
        alpha = data[:, :, 3] if data.ndim == 3 and data.shape[2] == 4 else None
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        out = self.upscale_tensor(tensor)[0].permute(1, 2, 0).numpy()
        height, width = data.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != (out.shape[1], out.shape[0]):
            shrink = size[0] < out.shape[1]
            out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        if single:
            out = out.mean(axis=2, keepdims=data.ndim == 3)
        elif alpha is not None:
            resized = cv2.resize(alpha, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
            out = np.concatenate([out, resized[:, :, None]], axis=2)
        out = np.clip(out, 0.0, 1.0)
        if dtype in (np.uint8, np.uint16):
            return np.round(out * top).astype(dtype)
        return out.astype(dtype if np.issubdtype(dtype, np.floating) else np.float32)
