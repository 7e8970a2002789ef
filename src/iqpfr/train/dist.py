"""Distributed setup from torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT).

No ``--local_rank`` argument: ``torchrun --nproc_per_node N -m iqpfr train ...`` (or any launcher
that sets the variables) is enough. Without the variables the run is a single process.
Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Read the torchrun variables (defaults: one process)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by the environment; returns this process's place in it."""
    info = env_dist_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, init_method="env://",
                                rank=info.rank, world_size=info.world_size)
    return info


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar logs over all processes (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (identity when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In-place broadcast from ``src`` so all processes hold identical values."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src)
    return tensor


def all_gather_objects(obj: object) -> list[object]:
    """Every process's ``obj`` in rank order (a one-item list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def maybe_no_sync(module: torch.nn.Module, sync: bool):
    """DDP's ``no_sync`` for the non-final micro-batches of gradient accumulation."""
    if not sync and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return module.module if hasattr(module, "module") and hasattr(module, "no_sync") else module
