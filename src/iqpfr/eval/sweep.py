"""``iqpfr eval-sweep``: restore a test set at several fidelity weights ``w`` and quality targets, evaluate
each run with :func:`iqpfr.eval.runner.evaluate`, and tabulate the means.

Layout of the output folder: ``w<w>_q<q>/`` (restored PNGs, same names as the LQ files),
``w<w>_q<q>.csv`` (+ summaries) per setting, ``sweep.csv`` / ``sweep.md`` (one row per setting) and
``sweep_plots/<quality>_vs_<fidelity>.png`` quality-vs-fidelity curves. Restored images that exist
are not recomputed and evaluation resumes from the per-setting CSVs, so an interrupted sweep continues;
``run.json`` records the model's fingerprint and the LQ folder, and a folder that holds another run
is refused rather than mixed (its restorations would otherwise be reused as if this model made them).
Faces must be aligned crops; they are resized to the network's input size and the outputs back to the
GT size (or the LQ size without GT).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from iqpfr.eval.runner import EvalConfig, evaluate


@dataclass
class SweepSettings:
    ws: Sequence[float] = (0.0, 0.5, 1.0)
    qualities: Sequence[float] = (0.9,)
    batch_size: int = 4


def model_fingerprint(model) -> str:
    """Hash of a model's weights and constructor settings (e.g. ``adain``): equal models, equal hash."""
    import hashlib
    import json

    import torch

    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps(getattr(model, "config", {}), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def claim_output_folder(out_dir: Path, stamp: dict[str, Any]) -> None:
    """Record ``stamp`` (what the folder's files depend on) in ``out_dir/run.json``, or refuse the folder.

    Resuming is only safe when the files already there were made by the same run; a folder holding
    another model's (or another test set's) results raises ``ValueError`` naming what differs.
    """
    import json

    from iqpfr.utils.fs import atomic_write_text

    path = out_dir / "run.json"
    stamp = json.loads(json.dumps(stamp, default=str))
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable ({exc}); choose another output folder") from None
        differs = sorted(k for k in set(old) | set(stamp) if old.get(k) != stamp.get(k))
        if differs:
            raise ValueError(f"{out_dir} holds the results of another run (differs in: {', '.join(differs)}); "
                             "choose another output folder")
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty and has no run.json; choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(stamp, indent=2, sort_keys=True) + "\n")


def setting_name(w: float, q: float) -> str:
    return f"w{w:g}_q{q:g}"


def restore_folder(model, lq_dir: Path, out_dir: Path, *, w: float, quality: float, batch_size: int,
                   device, size_of: Callable[[str, np.ndarray], tuple[int, int]],
                   log: Callable[[str], None], progress: bool | None = None) -> list[str]:
    """Restore every LQ image of ``lq_dir`` into ``out_dir`` (PNG); returns failure messages."""
    import cv2
    import torch
    from tqdm import tqdm

    from iqpfr.io import ImageReadError, list_images, read_rgb, write_rgb
    from iqpfr.restorer import model_input_size

    side = model_input_size(model)
    files = [(p, r) for p, r in list_images([lq_dir]) if not (out_dir / r.with_suffix(".png")).exists()]
    failures: list[str] = []
    bar = tqdm(total=len(files), desc=f"restore {setting_name(w, quality)}", unit="img", file=sys.stderr,
               disable=(not progress) if progress is not None else None)
    for start in range(0, len(files), max(1, batch_size)):
        batch, names = [], []
        for path, rel in files[start : start + max(1, batch_size)]:
            try:
                img = read_rgb(path)
            except ImageReadError as exc:
                failures.append(str(exc))
                log(f"iqpfr eval-sweep: {exc}")
                continue
            interp = cv2.INTER_AREA if img.shape[0] > side else cv2.INTER_CUBIC
            batch.append(cv2.resize(img, (side, side), interpolation=interp))
            names.append((rel, img))
        if batch:
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)
            n = x.shape[0]
            with torch.no_grad():
                out = model(x, w=torch.full((n,), float(w), device=device),
                            quality=torch.full((n,), float(quality), device=device)).image
            images = ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            for (rel, lq), restored in zip(names, images):
                height, width = size_of(rel.with_suffix("").as_posix(), lq)
                if restored.shape[:2] != (height, width):
                    restored = cv2.resize(restored, (width, height), interpolation=cv2.INTER_CUBIC)
                write_rgb(out_dir / rel.with_suffix(".png"), restored, overwrite=False)
        bar.update(min(batch_size, len(files) - start))
    bar.close()
    return failures


def run_sweep(model, lq_dir: Path, out_dir: Path, eval_cfg: EvalConfig, settings: SweepSettings,
              log: Callable[[str], None] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Restore + evaluate every (w, quality); writes sweep.csv/.md and plots; returns (table, failures)."""
    from iqpfr.eval import report
    from iqpfr.eval.protocol import metric_spec
    from iqpfr.eval.runner import gt_index, write_results_csv
    from iqpfr.io import read_rgb
    from iqpfr.utils.device import resolve_device

    log = log or (lambda msg: print(msg, file=sys.stderr))
    claim_output_folder(out_dir, {"model": model_fingerprint(model), "lq": Path(lq_dir).resolve(),
                                  "gt": None if eval_cfg.gt_dir is None else Path(eval_cfg.gt_dir).resolve()})
    device = resolve_device(eval_cfg.device)
    model = model.to(device).eval()
    gts = gt_index(eval_cfg.gt_dir, False) if eval_cfg.gt_dir is not None else {}

    def size_of(key: str, lq: np.ndarray) -> tuple[int, int]:
        if key in gts:
            return read_rgb(gts[key]).shape[:2]
        return lq.shape[:2]

    table: list[dict[str, Any]] = []
    failures: list[str] = []
    for q in settings.qualities:
        for w in settings.ws:
            name = setting_name(w, q)
            failures += restore_folder(model, lq_dir, out_dir / name, w=w, quality=q,
                                       batch_size=settings.batch_size, device=device, size_of=size_of, log=log,
                                       progress=eval_cfg.progress)
            cfg = replace(eval_cfg, pred_dir=out_dir / name, out_csv=out_dir / f"{name}.csv",
                          extra={**eval_cfg.extra, "w": w, "quality": q})
            result = evaluate(cfg, log)
            failures += result.failures
            row: dict[str, Any] = {"setting": name, "w": w, "quality": q, "n": len(result.rows)}
            for column, stats in result.summary["metrics"].items():
                row[column] = stats.get("mean", float("nan"))
            row.update({k: v for k, v in result.summary["set_metrics"].items() if isinstance(v, float)})
            table.append(row)
    columns = [k for k in table[0] if k != "setting"] if table else []
    write_results_csv(out_dir / "sweep.csv", {r["setting"]: {"file": r["setting"], **r} for r in table},
                      columns)
    _write_markdown(out_dir / "sweep.md", table)
    if eval_cfg.plots and table:
        metrics = [m for m in eval_cfg.metrics]
        quality_metrics = [m for m in metrics if metric_spec(m).kind == "nr"] or \
            [m for m in metrics if m in ("lpips", "fid")]
        fidelity_metrics = [m for m in metrics if metric_spec(m).kind == "fr" and m != "lpips"]
        try:
            for qm in quality_metrics[:1]:
                for fm in fidelity_metrics:
                    report.plot_quality_fidelity(out_dir / "sweep_plots" / f"{qm}_vs_{fm}.png", table, qm, fm)
        except ImportError as exc:
            log(f"iqpfr eval-sweep: plots skipped ({exc})")
    return table, failures


def _write_markdown(path: Path, table: list[dict[str, Any]]) -> None:
    from iqpfr.utils.fs import atomic_write_text

    if not table:
        atomic_write_text(path, "no settings evaluated\n")
        return
    columns = [k for k in table[0] if k != "setting"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) and c not in ("w", "quality") else f"{row.get(c)}"
                 for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")
