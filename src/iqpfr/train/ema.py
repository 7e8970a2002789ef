"""Exponential moving average of a network's weights (decay 0.995 in the paper recipe)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``shadow = d * shadow + (1 - d) * param`` after every optimiser step.

    ``d`` is ``decay``, or with ``warmup`` ``min(decay, (1 + n) / (10 + n))`` after n updates, so a
    short run's EMA is not dominated by its random initialisation (0.995 still weighs the initial
    weights by 37% after 200 steps). Floating-point buffers (e.g. norm statistics) are copied, not
    averaged. The shadow model is a frozen deep copy in eval mode; ``updates`` is saved with it.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        src = dict(model.named_parameters())
        for name, p in self.shadow.named_parameters():
            p.lerp_(src[name].detach().to(p.dtype), 1.0 - decay)
        src_buf = dict(model.named_buffers())
        for name, b in self.shadow.named_buffers():
            b.copy_(src_buf[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int | None = None) -> None:
        self.shadow.load_state_dict(state)
        if updates is not None:
            self.updates = int(updates)
