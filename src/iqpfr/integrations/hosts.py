"""What the host plug-ins share: their image layouts in and out of ``FaceRestorer``.

* ComfyUI ``IMAGE``: a float tensor (B, H, W, 3), RGB in [0, 1] (on any device).
* AUTOMATIC1111/Forge face restorers: ``restore(np_image)`` with (H, W, 3) uint8 RGB.

Both go through ``FaceRestorer.restore`` (detection, alignment, batching, paste-back), never a
second copy of the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

DEFAULT_MODEL = "iqpfr (embedded default)"


def parse_fidelity(fidelity: float, auto: bool) -> float | str:
    """The ``fidelity`` argument of ``FaceRestorer.restore``: ``"auto"`` or w in [0, 1]."""
    if auto:
        return "auto"
    w = float(fidelity)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {w}")
    return w


def load_restorer(model: str = DEFAULT_MODEL, *, device: str = "auto", detector: str = "dlib-hog"):
    """A ``FaceRestorer`` for a host's model menu entry: ``DEFAULT_MODEL``, a zoo name or a file."""
    from iqpfr.restorer import FaceRestorer

    source = None if model in (DEFAULT_MODEL, "", None) else model
    return FaceRestorer.from_pretrained(source, device=device, detector=detector)


def model_choices(extra_folders: list[str | os.PathLike] = ()) -> list[str]:
    """Model menu: the embedded default, restoration weights of the zoo already on disk, and the
    .safetensors/.pth files of ``extra_folders`` (e.g. ComfyUI's ``facerestore_models``)."""
    from pathlib import Path

    choices = [DEFAULT_MODEL]
    try:
        from iqpfr.weights.cache import cached_path
        from iqpfr.weights.zoo import ZOO

        for entry in ZOO.values():
            if entry.kind == "restoration" and not entry.embedded and cached_path(entry.name).is_file():
                choices.append(entry.name)
    except Exception:  # an unreadable cache only shortens the menu
        pass
    for folder in extra_folders:
        for path in sorted(Path(folder).glob("*")):
            if path.suffix in (".safetensors", ".pth") and path.is_file():
                choices.append(str(path))
    return choices


@dataclass
class BatchResult:
    """``images`` (B, H', W', 3) float32 in [0, 1]; ``faces`` (N, S, S, 3) restored crops of all
    images in order (one black S x S image when no face was found); per-image notes."""

    images: torch.Tensor
    faces: torch.Tensor
    notes: list[list[str]]


def restore_comfy_batch(
    restorer: Any, images: torch.Tensor, *, fidelity: float | str = "auto", quality: float | None = None,
    upscale: float = 1.0, only_center_face: bool = False, face_upsample: bool | None = None,
) -> BatchResult:
    """Restore every image of a ComfyUI ``IMAGE`` batch (B, H, W, 3) in [0, 1]."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected a ComfyUI IMAGE batch (B, H, W, 3), got {tuple(images.shape)}")
    device = images.device
    arrays = [np.ascontiguousarray(img.detach().float().clamp(0, 1).cpu().numpy()) for img in images]
    outs, faces, notes = [], [], []
    for array in arrays:
        result = restorer.restore(array, fidelity=fidelity, quality=quality, upscale=upscale,
                                  only_center_face=only_center_face, face_upsample=face_upsample)
        outs.append(torch.from_numpy(np.ascontiguousarray(result.image, dtype=np.float32)))
        faces += [torch.from_numpy(np.ascontiguousarray(f.restored, dtype=np.float32)) for f in result.faces
                  if f.restored is not None]
        notes.append(list(result.notes))
    if not faces:
        size = int(restorer.face_size)
        faces = [torch.zeros(size, size, 3)]
    return BatchResult(torch.stack(outs).to(device), torch.stack(faces).to(device), notes)


def restore_uint8_rgb(
    restorer: Any, np_image: np.ndarray, *, fidelity: float | str = "auto", quality: float | None = None,
    face_upsample: bool | None = None,
) -> np.ndarray:
    """AUTOMATIC1111's contract: (H, W, 3) uint8 RGB in, the same shape and dtype out."""
    array = np.asarray(np_image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    result = restorer.restore(array, fidelity=fidelity, quality=quality, face_upsample=face_upsample)
    return np.asarray(result.image, dtype=np.uint8)
