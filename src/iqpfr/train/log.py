"""Training logs: a JSONL file (one object per logged step), optional TensorBoard, a tqdm bar and
sample grids (rows of LQ | output | GT) saved as PNG. Only the main process writes."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from iqpfr.utils.fs import atomic_write_text, atomic_write_with


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete records of a JSONL log (a torn last line from a killed run is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class TrainLogger:
    """JSONL + TensorBoard + progress bar. ``resume_step`` drops records past the resumed checkpoint,
    so the log of a killed-and-resumed run reads like the log of an uninterrupted one."""

    def __init__(self, run_dir: str | Path, *, total_steps: int, start_step: int, enabled: bool,
                 tensorboard: bool = False, progress: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "log.jsonl"
        self._tb = None
        self._bar = None
        self._last_time = time.perf_counter()
        self._last_step = start_step
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= start_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1)
            except ImportError:
                warnings.warn("tensorboard is not installed (pip install 'iqpfr[train]'): "
                              "logging to log.jsonl only", stacklevel=2)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, step: int, values: dict[str, float], images_per_step: int) -> dict[str, float]:
        """Write one record for ``step``; adds ``images_per_s`` measured since the previous record."""
        now = time.perf_counter()
        steps = max(step - self._last_step, 1)
        record = {"step": step, **{k: float(v) for k, v in values.items()}}
        record["images_per_s"] = steps * images_per_step / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        if not self.enabled:
            return record
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                 for k, v in record.items()}) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)
        return record

    def progress(self, step: int, values: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.n = step
            shown = {k: f"{v:.3g}" for k, v in values.items() if k.startswith("loss") or k == "images_per_s"}
            self._bar.set_postfix(shown, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()


def save_sample_grid(path: str | Path, rows: list[tuple[torch.Tensor, ...]]) -> Path:
    """Save a PNG with one row per sample and one column per tensor (3xHxW in [-1, 1])."""
    from PIL import Image

    tiles = []
    for row in rows:
        size = row[-1].shape[-2:]
        cols = [torch.nn.functional.interpolate(t[None].float(), size=size, mode="nearest")[0] for t in row]
        tiles.append(torch.cat(cols, dim=2))
    grid = torch.cat(tiles, dim=1)
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return atomic_write_with(path, lambda tmp: Image.fromarray(np.ascontiguousarray(img)).save(tmp, format="PNG"))
