"""The base class of every training stage (networks, optimisers, EMA, state, export) and the
learning-rate schedule.

A stage owns its networks and implements ``train_step(micro_batches, step)``: one optimiser step
made of ``len(micro_batches)`` accumulated micro-batches. The loop (``iqpfr.train.loop``) does
everything else; ``iqpfr.train.stages`` is the table of stages.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqpfr.train.config import OptimConfig
from iqpfr.train.ema import ModelEMA


def lr_at(step: int, base_lr: float, optim: OptimConfig) -> float:
    """Learning rate of (1-based) ``step``: warm-up, then constant / cosine with restarts / multistep."""
    t = step - 1
    if optim.warmup > 0 and t < optim.warmup:
        return base_lr * (t + 1) / optim.warmup
    if optim.schedule == "cosine":
        phase = (t % optim.period) / optim.period
        return optim.eta_min + (base_lr - optim.eta_min) * 0.5 * (1 + math.cos(math.pi * phase))
    if optim.schedule == "multistep":
        return base_lr * optim.gamma ** sum(t >= m for m in optim.milestones)
    return base_lr


class Stage:
    """Base class. Subclasses fill ``networks`` (plain modules; saved), ``optimizers`` (with
    ``base_lrs``) and ``ema`` (of the network that gets exported), then implement ``train_step``."""

    name = "stage"

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.device = ctx.device
        self.networks: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.base_lrs: dict[str, float] = {}
        self.ema: ModelEMA | None = None

    # -- optimisation helpers -------------------------------------------------------------------
    def make_ema(self, model: nn.Module) -> ModelEMA:
        return ModelEMA(model, self.cfg.ema_decay, warmup=self.cfg.ema_warmup)

    def make_optimizer(self, key: str, params, lr: float,
                       lr_scales: dict[torch.nn.Parameter, float] | None = None) -> torch.optim.Optimizer:
        """Adam over the trainable ``params``; ``lr_scales`` multiplies the learning rate of some of
        them (one parameter group per distinct factor, kept through the schedule)."""
        params = [p for p in params if p.requires_grad]
        if not params:
            raise RuntimeError(f"{self.name}: no trainable parameters for optimiser {key!r}")
        scales = lr_scales or {}
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for p in params:
            groups.setdefault(float(scales.get(p, 1.0)), []).append(p)
        o = self.cfg.optim
        opt = torch.optim.Adam([{"params": ps, "lr": lr * s, "lr_scale": s} for s, ps in groups.items()],
                               lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.optimizers[key] = opt
        self.base_lrs[key] = lr
        return opt

    def quality_lr_scales(self, model: nn.Module) -> dict[torch.nn.Parameter, float]:
        """``optim.quality_embed_lr_scale`` for the quality embedding / adapter of ``model``."""
        scale = self.cfg.optim.quality_embed_lr_scale
        return {p: scale for name, p in model.named_parameters()
                if name.startswith(("quality_embed.", "quality_adapter."))}

    def frozen_scorer(self, name: str, given: nn.Module | None = None) -> nn.Module:
        """The NR-IQA scorer of the quality loss (``given``, else ``create_scorer(name)``, which must be
        differentiable), on the device, in eval mode, with its parameters frozen."""
        scorer = given
        if scorer is None:
            from iqpfr.quality.registry import create_scorer

            scorer = create_scorer(name)
            if not getattr(scorer, "differentiable", False):
                raise ValueError(f"stage2.quality_scorer {name!r} is not differentiable; pick one that is "
                                 "(e.g. face-iqa) or set stage2.quality_weight=0")
        scorer.to(self.device).eval()
        for p in scorer.parameters():
            p.requires_grad_(False)
        return scorer

    def set_lr(self, step: int) -> None:
        for key, opt in self.optimizers.items():
            lr = lr_at(step, self.base_lrs[key], self.cfg.optim)
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

    def clip_and_step(self, key: str) -> None:
        opt = self.optimizers[key]
        if self.cfg.optim.grad_clip > 0:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        opt.step()

    def lr_logs(self) -> dict[str, float]:
        return {f"lr_{k}": opt.param_groups[0]["lr"] / opt.param_groups[0].get("lr_scale", 1.0)
                for k, opt in self.optimizers.items()}

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "networks": {k: m.state_dict() for k, m in self.networks.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.networks.items():
            m.load_state_dict(state["networks"][k])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"], state.get("ema_updates"))
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state.get("extra") or {})

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -- hooks ----------------------------------------------------------------------------------
    def on_fresh_start(self) -> None:
        """Called once before step 1 of a run that does not resume (e.g. k-means initialisation)."""

    def train_step(self, micro_batches: list[dict], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def extra_logs(self) -> dict[str, float]:
        return self.lr_logs()

    @torch.no_grad()
    def sample_rows(self, batch: dict, count: int = 4) -> list[tuple[torch.Tensor, ...]]:
        """Rows (LQ, output, GT) of the first ``count`` samples of ``batch``, output by the EMA network."""
        raise NotImplementedError

    def export(self, run_dir: Path) -> Path:
        """Write the EMA weights (``<run_dir>/model_ema.safetensors``) and return the path.

        The file describes itself: the network's class, constructor arguments (overrides included)
        and quality adapter in the ``config`` entry that ``iqpfr.load_model`` reads, plus the stage
        and the resolved training config (``train_config``), so it loads by path alone.
        """
        import dataclasses
        import json

        from safetensors.torch import save_file

        from iqpfr.utils.fs import atomic_path
        from iqpfr.weights.checkpoint import (
            CONFIG_TENSOR_KEY,
            METADATA_KEY,
            config_tensor,
            model_config,
            wants_config_tensor,
        )

        assert self.ema is not None
        state = {k: v.detach().cpu().contiguous() for k, v in self.ema.state_dict().items()}
        path = Path(run_dir) / "model_ema.safetensors"
        meta = {"stage": str(self.cfg.stage), "model": self.cfg.model.name, "format": "pt",
                "iqpfr_format": "iqpfr-stage-weights"}
        try:
            config = model_config(self.ema.shadow)
        except TypeError:  # a network without a constructor record: weights only
            config = None
        if config is not None:
            meta[METADATA_KEY] = json.dumps({**config, "stage": int(self.cfg.stage)}, sort_keys=True)
            if wants_config_tensor(config):  # for loaders that see only tensors (spandrel, ComfyUI)
                state[CONFIG_TENSOR_KEY] = config_tensor(config)
        if dataclasses.is_dataclass(self.cfg):
            meta["train_config"] = json.dumps(dataclasses.asdict(self.cfg), sort_keys=True, default=str)
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return path

