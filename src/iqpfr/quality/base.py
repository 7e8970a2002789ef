"""The scorer interface shared by every no-reference image-quality (NR-IQA) model.

A scorer maps a batch of RGB images ``(B, 3, H, W)`` with values in [0, 1] to one score per image
``(B,)``. Scorers are ``nn.Module``s, so ``.to(device)`` moves whatever state they hold; the ones
marked ``differentiable`` let gradients flow from the score back to the pixels.

Scorers are built by name with ``iqpfr.quality.registry.create_scorer`` (which imports the
implementations, so they can import this module without a circle).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class QualityScorer(nn.Module):
    """Base class: subclasses set the attributes below and implement ``forward(images) -> (B,)``.

    Attributes:
        name: the metric's name as used by :func:`create_scorer` and in CSV columns.
        higher_better: True when a larger score means a better image (NIQE, PIQE, BRISQUE: False).
        differentiable: True when gradients of the score reach the input pixels.
        range: typical (low, high) values, for display and rough normalisation only.
    """

    name: str = "base"
    higher_better: bool = True
    differentiable: bool = False
    range: tuple[float, float] = (0.0, 1.0)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Score ``images`` (B, 3, H, W) RGB in [0, 1] -> (B,) float tensor on the input's device."""
        check_images(images, self.name)
        out = self.forward(images)
        return out.reshape(images.shape[0])

    def extra_info(self) -> dict[str, Any]:
        """Provenance recorded with the scores (e.g. model file, library version)."""
        return {}

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, higher_better={self.higher_better}, "
                f"differentiable={self.differentiable}, range={self.range}")


def check_images(images: torch.Tensor, who: str = "scorer") -> None:
    """Raise ValueError unless ``images`` is a float (B, 3, H, W) tensor with values in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{who}: expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{who}: expected a float tensor in [0, 1], got {images.dtype}")
    if images.numel() and (images.detach().min() < -1e-3 or images.detach().max() > 1 + 1e-3):
        lo, hi = float(images.detach().min()), float(images.detach().max())
        raise ValueError(f"{who}: expected values in [0, 1], got [{lo:.3f}, {hi:.3f}] "
                         "(map [-1, 1] images with (x + 1) / 2 first)")
