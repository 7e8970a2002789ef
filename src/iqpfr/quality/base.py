"""The scorer interface shared by every no-reference image-quality (NR-IQA) model, and its factory.

A scorer maps a batch of RGB images ``(B, 3, H, W)`` with values in [0, 1] to one score per image
``(B,)``. Scorers are ``nn.Module``s, so ``.to(device)`` moves whatever state they hold; the ones
marked ``differentiable`` let gradients flow from the score back to the pixels.

``create_scorer(name, **kw)`` builds one by name; ``list_scorers()`` names the built-in ones. Names
of the form ``pyiqa:<metric>`` (or any name that is not built in) go to the optional pyiqa backend.
"""

from __future__ import annotations

import importlib
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


# built-in name -> (module, class); explicit, no folder scanning
_BUILTIN = {
    "niqe": ("iqpfr.quality.niqe", "NIQE"),
    "piqe": ("iqpfr.quality.piqe", "PIQE"),
    "brisque": ("iqpfr.quality.brisque", "BRISQUE"),
    "face-iqa": ("iqpfr.quality.learned", "FaceIQA"),
    "uiqm": ("iqpfr.quality.uiqm", "UIQM"),
    "uciqe": ("iqpfr.quality.uciqe", "UCIQE"),
}

PYIQA_PREFIX = "pyiqa:"


def list_scorers() -> list[str]:
    """Names of the built-in scorers (``pyiqa:<metric>`` names are accepted too, with the extra)."""
    return sorted(_BUILTIN)


def create_scorer(name: str, **kwargs: Any) -> QualityScorer:
    """Build a scorer by name: one of :func:`list_scorers`, or ``pyiqa:<metric>`` for the pyiqa backend.

    Keyword arguments go to the scorer's constructor (e.g. ``create_scorer("niqe", params_path=...)``,
    ``create_scorer("brisque", model_path=...)``, ``create_scorer("pyiqa:musiq", as_loss=True)``).
    """
    key = name.strip()
    if key.lower() in _BUILTIN:
        module_name, class_name = _BUILTIN[key.lower()]
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(**kwargs)
    metric = key[len(PYIQA_PREFIX):] if key.lower().startswith(PYIQA_PREFIX) else key
    if not metric:
        raise ValueError(f"empty metric name in {name!r}")
    if not key.lower().startswith(PYIQA_PREFIX):
        # unknown bare name: only pyiqa might know it, say so clearly
        from iqpfr.quality.pyiqa_backend import pyiqa_available

        if not pyiqa_available():
            raise ValueError(f"unknown quality metric {name!r}: built-in metrics are "
                             f"{', '.join(list_scorers())}; other names need the optional pyiqa "
                             f"backend (pip install 'iqpfr[iqa]'), spelled pyiqa:{metric}")
    from iqpfr.quality.pyiqa_backend import PyIQAScorer

    return PyIQAScorer(metric, **kwargs)
