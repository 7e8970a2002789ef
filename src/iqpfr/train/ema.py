"""Exponential moving average of a network's weights (decay 0.995 in the paper recipe)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * param`` after every optimiser step.

    Floating-point buffers (e.g. norm statistics) are copied, not averaged. The shadow model is a
    frozen deep copy in eval mode; ``state_dict`` / ``load_state_dict`` make it resumable.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        src = dict(model.named_parameters())
        for name, p in self.shadow.named_parameters():
            p.lerp_(src[name].detach().to(p.dtype), 1.0 - self.decay)
        src_buf = dict(model.named_buffers())
        for name, b in self.shadow.named_buffers():
            b.copy_(src_buf[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)
