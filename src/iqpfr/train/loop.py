"""The one training loop shared by all three stages.

``train(cfg)`` sets up the process group (torchrun environment), seeds, data and the stage, then
repeats: gather ``grad_accum`` micro-batches -> ``stage.train_step`` -> log / sample / checkpoint.
Everything a stage does in a step lives in its ``train_step`` (the stage table: ``iqpfr.train.stages``).

Exact resume: the data order is a pure function of (seed, samples consumed), the learning rate a
pure function of the step, and a checkpoint stores networks, EMA, optimisers and every process's
RNG states. A run killed at any moment and resumed from its last checkpoint therefore recomputes
the same losses an uninterrupted run would have (bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqpfr.config import config_to_dict
from iqpfr.train import checkpoint as ckpt_io
from iqpfr.train.config import TrainConfig
from iqpfr.train.dist import DistInfo, all_gather_objects, all_reduce_mean, barrier, init_distributed
from iqpfr.train.loader import build_dataset, build_loader, to_device
from iqpfr.train.stages import build_stage


@dataclass
class RunContext:
    """What a stage needs to know about the process it runs in."""

    cfg: TrainConfig
    device: torch.device
    dist: DistInfo
    amp_dtype: torch.dtype | None  # None: full fp32

    def autocast(self, enabled: bool = True):
        if self.amp_dtype is None or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def wrap(self, module: nn.Module, find_unused: bool = False) -> nn.Module:
        """DistributedDataParallel around ``module`` in a multi-process run; itself otherwise.
        ``find_unused``: some steps leave parameters unused (also forced by the config key)."""
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids,
                                       find_unused_parameters=find_unused or self.cfg.find_unused_parameters)

    def no_sync(self, modules: list[nn.Module], sync: bool) -> contextlib.ExitStack:
        """Skip DDP's all-reduce on the non-final micro-batches of gradient accumulation."""
        stack = contextlib.ExitStack()
        if not sync:
            for m in modules:
                if hasattr(m, "no_sync"):
                    stack.enter_context(m.no_sync())
        return stack


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def resolve_resume(cfg: TrainConfig, resume: str | None) -> Path | None:
    """``None`` / ``"auto"`` (latest in run_dir, if any) / an explicit checkpoint path."""
    if resume is None:
        return None
    if resume == "auto":
        return ckpt_io.find_latest(cfg.run_dir)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint to resume from not found")
    return path


def _config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return diffs


def train(cfg: TrainConfig, *, resume: str | None = None, stop_after: int | None = None,
          progress: bool = True, stage_overrides: dict[str, Any] | None = None,
          on_step: Callable[[int, RunContext], None] | None = None) -> dict[str, Any]:
    """Run (or continue) training as described by ``cfg``; returns a summary of the run.

    ``resume``: ``"auto"`` continues from the newest checkpoint in ``cfg.run_dir`` (a fresh start if
    there is none), a path continues from that file. ``stop_after``: return right after that step
    without a final checkpoint, as if the process had been killed (tests). ``stage_overrides`` are
    passed to the stage constructor (e.g. a ready-made quality scorer). ``on_step(step, ctx)`` runs
    after every step; it may lower ``ctx.cfg.total_steps`` to end the run early with a normal final
    checkpoint and export (e.g. at a wall-clock deadline; in a multi-process run every process must
    decide alike). The summary holds ``step``, ``history`` (logged records), ``checkpoint``, ``images_per_s`` and
    ``stage`` (the trained networks: ``stage.networks``, ``stage.ema.shadow``).
    """
    from iqpfr.train.log import TrainLogger, save_sample_grid
    from iqpfr.utils.device import resolve_device

    cfg.validate()
    resume_path = resolve_resume(cfg, resume)
    if resume is None and ckpt_io.find_latest(cfg.run_dir) is not None:
        raise FileExistsError(f"{cfg.run_dir} already holds checkpoints: pass --resume auto to continue "
                              "that run, or choose another run_dir")
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        # fixed input sizes: let cuDNN pick the fastest kernels (resume is then exact on CPU only)
        torch.backends.cudnn.benchmark = True
    ctx = RunContext(cfg=cfg, device=device, dist=info, amp_dtype=_amp_dtype(cfg, device))

    dataset = build_dataset(cfg)
    # identical initialisation on every process (DDP also broadcasts rank 0's weights, but EMA
    # copies and frozen parts are made before or outside that), then one RNG stream per process
    seed_everything(cfg.seed)
    stage = build_stage(ctx, dataset, **(stage_overrides or {}))
    seed_everything(cfg.seed + info.rank)

    step = 0
    if resume_path is not None:
        state = ckpt_io.load_checkpoint(resume_path)
        diffs = _config_differences(state.get("config", {}), config_to_dict(cfg))
        if diffs and info.is_main:
            warnings.warn(f"resuming {resume_path} with a changed config: {'; '.join(diffs)}", stacklevel=2)
        stage.load_state_dict(state["stage"])
        step = int(state["step"])
        rng = state.get("rng", [])
        if len(rng) == info.world_size:
            ckpt_io.restore_rng_state(rng[info.rank])
        elif info.is_main:
            warnings.warn(f"{resume_path}: saved by {len(rng)} processes, resuming with {info.world_size}: "
                          "RNG streams restart and the data is re-sharded (each process skips the "
                          "samples it would have seen so far)", stacklevel=2)
    else:
        stage.on_fresh_start()

    per_step = cfg.batch_size * cfg.grad_accum
    loader = build_loader(dataset, cfg, info, start_sample=step * per_step)
    logger = TrainLogger(cfg.run_dir, total_steps=cfg.total_steps, start_step=step, enabled=info.is_main,
                         tensorboard=cfg.tensorboard, progress=progress and info.is_main)
    if info.is_main:
        import yaml

        from iqpfr.utils.fs import atomic_write_text

        atomic_write_text(Path(cfg.run_dir) / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    def save(at_step: int) -> Path | None:
        rng_states = all_gather_objects(ckpt_io.capture_rng_state())
        path = None
        if info.is_main:
            state = {"format": "iqpfr-train-1", "config": config_to_dict(cfg), "step": at_step,
                     "world_size": info.world_size, "stage": stage.state_dict(), "rng": rng_states}
            path = ckpt_io.save_checkpoint(ckpt_io.checkpoint_path(cfg.run_dir, at_step), state)
            ckpt_io.prune_checkpoints(cfg.run_dir, cfg.keep_checkpoints)
        barrier()
        return path

    history: list[dict[str, float]] = []
    sums: dict[str, torch.Tensor] = {}
    count = 0
    t_start = time.perf_counter()
    start_step = step
    data_iter = iter(loader)
    try:
        while step < cfg.total_steps:
            micro = [to_device(next(data_iter), device) for _ in range(cfg.grad_accum)]
            step += 1
            stage.set_lr(step)
            values = stage.train_step(micro, step)
            for k, v in values.items():
                sums[k] = sums.get(k, 0) + (v.detach().float() if isinstance(v, torch.Tensor) else float(v))
            count += 1
            if step % cfg.log_every == 0 or step == cfg.total_steps:
                means = {k: float(v) / count for k, v in sums.items()}
                means = all_reduce_mean(means, device)
                means.update(stage.extra_logs())
                record = logger.log(step, means, per_step * info.world_size)
                history.append(record)
                logger.progress(step, record)
                sums, count = {}, 0
            if info.is_main and cfg.sample_every > 0 and step % cfg.sample_every == 0:
                rows = stage.sample_rows(micro[0])
                save_sample_grid(Path(cfg.run_dir) / "samples" / f"step_{step:08d}.png", rows)
            if on_step is not None:
                on_step(step, ctx)
            if stop_after is not None and step >= stop_after:
                return {"step": step, "history": history, "stopped": True, "stage": stage}
            if cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0 and step < cfg.total_steps:
                save(step)
        final = save(step)
        if info.is_main:
            stage.export(Path(cfg.run_dir))
        elapsed = time.perf_counter() - t_start
        done = step - start_step
        return {"step": step, "history": history, "checkpoint": final, "stopped": False,
                "images_per_s": done * per_step * info.world_size / max(elapsed, 1e-9), "stage": stage}
    finally:
        logger.close()
        del data_iter
