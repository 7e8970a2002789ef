"""Training checkpoints that lose nothing: written atomically, loadable with ``weights_only=True``.

A checkpoint holds the resolved config, the step, every network (and its EMA), every optimiser,
the GradScaler-free precision state, and each process's RNG states (python, numpy, torch, CUDA).
The data order needs no state of its own: it is a pure function of (seed, step), see
``iqpfr.data.dataset.ResumableSampler``. Learning rates are a pure function of the step too.

Files are ``<run_dir>/checkpoints/step_00001234.pt``; a file that exists is complete (temporary
file + fsync + rename), so "the latest" is simply the highest step on disk.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqpfr.utils.fs import atomic_path

_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint in ``run_dir``, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest(run_dir: str | Path) -> Path | None:
    items = list_checkpoints(run_dir)
    return items[-1][1] if items else None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (plain containers of tensors / numbers / strings)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU with ``weights_only=True`` (no pickled code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file: say which one
        raise RuntimeError(f"{path}: not a readable iqpfr checkpoint ({exc})") from exc


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0: keep everything)."""
    if keep <= 0:
        return
    for _, p in list_checkpoints(run_dir)[:-keep]:
        p.unlink(missing_ok=True)


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain numbers (safe for ``weights_only`` loading)."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["mt"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": nps["key"].numpy().astype(np.uint32), "pos": nps["pos"]},
        "has_gauss": nps["has_gauss"],
        "gauss": nps["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
