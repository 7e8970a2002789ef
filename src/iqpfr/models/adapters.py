"""Plug-and-play quality conditioning for existing restoration networks (method.md §9).

``attach_quality_adapter(model)`` adds a zero-initialised ``QualityEmbedding`` as
``model.quality_adapter``: the wrapped network's own modules and state-dict keys are untouched and
the new parameters live under ``quality_adapter.*``. The network adds it at its bottleneck by
calling ``apply_quality_adapter(self, latent, quality)`` (identity when no adapter is attached):

* CodeFormer: the encoder latent ``lq_feat`` (C, h, w), before the code-prediction Transformer;
* GFPGAN v1.4: the style code (num_latent, num_style_feat) produced by ``final_linear``.

With the embedding still zero the adapted network computes exactly what the original computes, so
an existing checkpoint is a valid starting point for fine-tuning with quality targets.
"""

from __future__ import annotations

import torch
from torch import nn

from iqpfr.models.conditioning import QualityEmbedding, quality_tensor

ADAPTER_PREFIX = "quality_adapter."
DEFAULT_QUALITY = 0.9  # the top bucket: the "best quality" condition used at inference


def quality_site_shape(model: nn.Module) -> tuple[int, ...]:
    """Per-sample shape of the tensor the adapter is added to."""
    shape = getattr(model, "quality_site_shape", None)
    if shape is not None:
        return tuple(shape)
    if hasattr(model, "final_linear") and hasattr(model, "num_style_feat"):  # GFPGAN style code
        return (model.final_linear.out_features // model.num_style_feat, model.num_style_feat)
    raise TypeError(f"{type(model).__name__} has no known quality-conditioning site")


def attach_quality_adapter(model: nn.Module, *, num_buckets: int = 10, mode: str = "bucket") -> nn.Module:
    """Add a zero-initialised quality embedding under ``quality_adapter.*``; returns ``model``."""
    model.quality_adapter = QualityEmbedding(quality_site_shape(model), num_buckets=num_buckets, mode=mode, zero_init=True)
    return model


def adapter_config(model: nn.Module) -> dict | None:
    """Settings to rebuild the attached adapter (``None`` when there is none)."""
    adapter = getattr(model, "quality_adapter", None)
    if adapter is None:
        return None
    return {"num_buckets": adapter.num_buckets, "mode": adapter.mode}


def apply_quality_adapter(model: nn.Module, latent: torch.Tensor, quality: float | torch.Tensor | None) -> torch.Tensor:
    """``latent + adapter(quality)`` if ``model`` has an adapter, else ``latent`` unchanged.

    latent: (B, *site_shape); quality: None (= 0.9), a float or a (B,) tensor in [0, 1].
    """
    adapter = getattr(model, "quality_adapter", None)
    if adapter is None:
        return latent
    default = getattr(model, "default_quality", DEFAULT_QUALITY)
    q = quality_tensor(quality, latent.shape[0], default, latent.device)
    return latent + adapter(q).to(latent.dtype)


def load_base_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load the wrapped network's original state dict (strict on every non-adapter key)."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.startswith(ADAPTER_PREFIX)]
    if missing or unexpected:
        raise RuntimeError(f"state dict does not match the wrapped network: missing {missing[:5]}, unexpected {unexpected[:5]}")
