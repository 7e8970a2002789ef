"""``iqpfr eval`` as a function: pair prediction and GT files, compute metrics in batches, write a
resumable per-image CSV, then set-level metrics (FID/KID) and the summary report.

Pairing: a prediction ``PRED/a/b.png`` is paired with the GT file of the same relative path and stem
(any image extension), e.g. ``GT/a/b.jpg``. Resuming: rows already in the CSV whose requested
columns are all filled are not recomputed, as long as the row's ``signature`` (a hash of the
prediction's and the GT's bytes and of the settings that change values) still matches: a CSV reused
for another prediction folder, or for restorations made again, is recomputed instead of reporting
stale rows. The CSV is rewritten atomically after every batch, so an interrupted run loses at most
one batch. Unreadable or unpaired images are reported on stderr,
counted as failures and skipped.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqpfr.eval.protocol import FULL_REFERENCE, SET_LEVEL, metric_spec, record_direction
from iqpfr.io import ImageReadError, list_images, read_rgb
from iqpfr.utils.fs import atomic_write_text


@dataclass
class EvalConfig:
    """Options of one evaluation run (the CLI flags of ``iqpfr eval``)."""

    pred_dir: Path
    out_csv: Path
    gt_dir: Path | None = None
    metrics: tuple[str, ...] = ("psnr", "ssim")
    batch_size: int = 8
    device: str = "auto"
    crop_border: int = 0
    fid_ref: str | None = None  # folder of images or statistics .npz; default: the GT folder
    fid_weights: str = "inception-fid"  # zoo name or file of the FID Inception weights
    fid_save_ref: Path | None = None  # write the reference statistics computed from a folder here
    ids_model: str = "dlib"  # or "arcface"
    arcface_weights: str = "arcface"  # zoo name or file, for ids_model="arcface"
    resize_to_gt: bool = False
    strip_suffix: str = ""  # removed from prediction stems before pairing (e.g. "_00" of per-face outputs)
    recursive: bool = False
    offline: bool = False
    plots: bool = True
    progress: bool | None = None  # None: only when stderr is a terminal
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the summary (e.g. w, quality)


# `iqpfr restore` writes restored_faces/NAME_NN[_suffix].png (NN: face index, suffix: --suffix / _w<w>)
_RESTORED_FACE = re.compile(r"^(?P<base>.+)_\d{2}(?:_[^/]+)?$")


def restored_face_base(key: str) -> str | None:
    """NAME for a per-face output key ``NAME_NN`` / ``NAME_NN_suffix``, else None."""
    match = _RESTORED_FACE.match(key)
    return match.group("base") if match else None


@dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    failures: list[str]


def _key(rel: Path) -> str:
    return rel.with_suffix("").as_posix()


def gt_index(gt_dir: Path, recursive: bool) -> dict[str, Path]:
    """Relative path without extension -> GT file."""
    return {_key(rel): path for path, rel in list_images([gt_dir], recursive=recursive)}


def pair_signature(pred: Path, gt: Path | None, cfg: EvalConfig) -> str:
    """Hash of what a row's values depend on: both files' bytes and the value-changing settings."""
    import hashlib

    digest = hashlib.blake2b(digest_size=10)
    for path in (pred, gt):
        digest.update(b"|" if path is None else path.read_bytes())
        digest.update(b"\0")
    digest.update(f"{cfg.resize_to_gt}|{cfg.crop_border}|{cfg.ids_model}|{cfg.arcface_weights}".encode())
    return digest.hexdigest()


def read_results_csv(path: Path) -> dict[str, dict[str, str]]:
    """Rows of an existing results CSV keyed by ``file`` (empty when absent)."""
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["file"]: row for row in csv.DictReader(fh) if row.get("file")}


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else ("nan" if math.isnan(value) else f"{value:.8g}")
    return str(value)


def write_results_csv(path: Path, rows: dict[str, dict[str, Any]], columns: list[str]) -> None:
    """Atomically write rows (sorted by file) with ``file`` + ``columns`` (+ any other existing columns)."""
    all_columns = ["file", *columns]
    for row in rows.values():
        all_columns.extend(k for k in row if k not in all_columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=all_columns, lineterminator="\n")
    writer.writeheader()
    for key in sorted(rows):
        writer.writerow({k: _format(v) for k, v in rows[key].items()})
    atomic_write_text(path, buf.getvalue())


def _to_tensor(images: list[np.ndarray]):
    import torch

    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255.0)


class MetricComputer:
    """Computes per-image metrics for a batch; models are loaded once, on first use."""

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg
        self._models: dict[str, Any] = {}
        self._device = None

    @property
    def device(self):
        if self._device is None:
            from iqpfr.utils.device import resolve_device

            self._device = resolve_device(self.cfg.device)
        return self._device

    def model(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._models:
            self._models[name] = build()
        return self._models[name]

    def prepare(self, metrics: list[str]) -> None:
        """Load every model the metrics need now, so a missing weight or package fails before any work."""
        for metric in metrics:
            if metric == "ids" and self.cfg.ids_model == "arcface":
                self._arcface()
            elif metric in ("ids", "lmd"):
                from iqpfr.eval import dlib_models

                dlib_models.model_path("recognition" if metric == "ids" else "landmarks68")
                dlib_models.detector()
            elif metric == "lpips":
                from iqpfr.eval.lpips import load_lpips_vgg

                self.model("lpips", lambda: load_lpips_vgg(offline=self.cfg.offline, device=self.device))
            elif metric in SET_LEVEL:
                from iqpfr.eval.fid import load_fid_inception

                self.model("inception", lambda: load_fid_inception(self.cfg.fid_weights, offline=self.cfg.offline,
                                                                    device=self.device))
            elif metric not in FULL_REFERENCE:
                from iqpfr.quality.registry import create_scorer

                scorer = self.model(f"nr:{metric}", lambda m=metric: create_scorer(m).to(self.device).eval())
                record_direction(metric, getattr(scorer, "higher_better", True))

    def compute(self, metric: str, preds: list[np.ndarray], gts: list[np.ndarray | None]) -> list[dict[str, float]]:
        """One dict of column values per image."""
        from iqpfr.eval import metrics as px

        cb = self.cfg.crop_border
        if metric in ("psnr", "psnr_y"):
            channel = "rgb" if metric == "psnr" else "y"
            return [{metric: px.psnr(p, g, channel=channel, crop_border=cb)} for p, g in zip(preds, gts)]
        if metric in ("ssim", "ssim_y", "ssim_rgb"):
            channel = {"ssim": "gray", "ssim_y": "y", "ssim_rgb": "rgb"}[metric]
            return [{metric: px.ssim(p, g, channel=channel, crop_border=cb)} for p, g in zip(preds, gts)]
        if metric == "ids" and self.cfg.ids_model == "arcface":
            from iqpfr.eval.arcface import arcface_distances

            return arcface_distances(self._arcface(), preds, gts)
        if metric == "ids":
            from iqpfr.eval.identity import identity_distance

            return [identity_distance(p, g) for p, g in zip(preds, gts)]
        if metric == "lmd":
            from iqpfr.eval.landmarks import landmark_distance

            return [{"lmd": landmark_distance(p, g)} for p, g in zip(preds, gts)]
        if metric == "lpips":
            return self._lpips(preds, gts)
        return self._no_reference(metric, preds)

    def _arcface(self):
        from iqpfr.eval.arcface import load_arcface

        return self.model("arcface", lambda: load_arcface(self.cfg.arcface_weights, offline=self.cfg.offline,
                                                          device=self.device))

    def _lpips(self, preds, gts):
        import torch

        from iqpfr.eval.lpips import load_lpips_vgg

        net = self.model("lpips", lambda: load_lpips_vgg(offline=self.cfg.offline, device=self.device))
        out = []
        for p, g in zip(preds, gts):  # one at a time: sizes may differ between pairs
            with torch.no_grad():
                x = _to_tensor([p]).to(self.device) * 2 - 1
                y = _to_tensor([g]).to(self.device) * 2 - 1
                out.append({"lpips": float(net(x, y)[0])})
        return out

    def _no_reference(self, metric, preds):
        import torch

        from iqpfr.quality.registry import create_scorer

        scorer = self.model(f"nr:{metric}", lambda: create_scorer(metric).to(self.device).eval())
        record_direction(metric, getattr(scorer, "higher_better", True))
        scores: list[float | None] = [None] * len(preds)
        by_shape: dict[tuple, list[int]] = {}
        for i, p in enumerate(preds):
            by_shape.setdefault(p.shape, []).append(i)
        for idx in by_shape.values():
            with torch.no_grad():
                values = scorer.score(_to_tensor([preds[i] for i in idx]).to(self.device))
            for i, v in zip(idx, values.tolist()):
                scores[i] = float(v)
        return [{metric: s} for s in scores]


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=(not enabled) if enabled is not None else None)


def _read_pair(pred_path: Path, gt_path: Path | None, resize_to_gt: bool) -> tuple[np.ndarray, np.ndarray | None]:
    pred = read_rgb(pred_path)
    if gt_path is None:
        return pred, None
    gt = read_rgb(gt_path)
    if pred.shape != gt.shape:
        if not resize_to_gt:
            raise ValueError(f"{pred_path}: size {pred.shape[1]}x{pred.shape[0]} differs from GT {gt_path} "
                             f"({gt.shape[1]}x{gt.shape[0]}); use --resize-to-gt")
        import cv2

        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_CUBIC)
    return pred, gt


def _compute_robustly(computer: MetricComputer, metric: str, items: list, failures: list[str],
                      log: Callable[[str], None]) -> list[tuple[str, dict[str, float]]]:
    """Batch computation; if it fails, image by image so one bad image costs only its own values."""
    try:
        values = computer.compute(metric, [it[2] for it in items], [it[3] for it in items])
        return [(it[0], vals) for it, vals in zip(items, values)]
    except Exception:  # retried one by one below, to find the image(s) at fault
        pass
    out = []
    for item in items:
        try:
            out.append((item[0], computer.compute(metric, [item[2]], [item[3]])[0]))
        except Exception as exc:  # a metric that cannot handle this image (e.g. too small for SSIM)
            msg = f"{item[0]}: {metric} failed ({type(exc).__name__}: {exc})"
            failures.append(msg)
            log(f"iqpfr eval: {msg}")
    return out


def evaluate(cfg: EvalConfig, log: Callable[[str], None] | None = None) -> EvalResult:
    """Run the evaluation described by ``cfg``; writes the CSV, the summary and the plots."""
    from iqpfr.eval import report

    log = log or (lambda msg: print(msg, file=sys.stderr))
    metrics = list(dict.fromkeys(m.strip() for m in cfg.metrics if m.strip()))
    per_image = [m for m in metrics if m not in SET_LEVEL]
    set_level = [m for m in metrics if m in SET_LEVEL]
    needs_gt = [m for m in per_image if m in FULL_REFERENCE]
    if needs_gt and cfg.gt_dir is None:
        raise ValueError(f"metrics {', '.join(needs_gt)} need --gt")
    if set_level and cfg.gt_dir is None and cfg.fid_ref is None:
        raise ValueError(f"{', '.join(set_level)} need a reference set: --fid-ref or --gt")
    # our own plots may live inside the prediction folder; they are not predictions
    own_outputs = cfg.out_csv.resolve().with_name(cfg.out_csv.stem + "_plots")
    pred_files = [(p, r) for p, r in list_images([cfg.pred_dir], recursive=cfg.recursive)
                  if own_outputs not in p.resolve().parents]
    if not pred_files:
        raise ValueError(f"{cfg.pred_dir}: no images found")
    gts = gt_index(cfg.gt_dir, cfg.recursive) if cfg.gt_dir is not None else {}

    columns = [c for m in per_image for c in metric_spec(m).columns]
    rows: dict[str, dict[str, Any]] = dict(read_results_csv(cfg.out_csv))
    failures: list[str] = []
    signatures: dict[str, str] = {}
    todo = []
    auto_paired = 0
    for path, rel in pred_files:
        key = rel.as_posix()
        gt_key = _key(rel)
        if cfg.strip_suffix and gt_key.endswith(cfg.strip_suffix):
            gt_key = gt_key[: -len(cfg.strip_suffix)]
        gt_path = gts.get(gt_key)
        if gt_path is None and not cfg.strip_suffix and gts:
            # `iqpfr restore` names per-face outputs NAME_NN[_suffix]: pair them with NAME
            base = restored_face_base(gt_key)
            if base is not None and base in gts:
                gt_path = gts[base]
                auto_paired += 1
        if needs_gt and gt_path is None:
            hint = "" if cfg.strip_suffix else (
                " (per-face outputs of iqpfr restore, NAME_NN.png, pair with NAME automatically; for other "
                "names pass --strip-suffix SUFFIX)")
            failures.append(f"{path}: no GT image named {gt_key}.* in {cfg.gt_dir}{hint}")
            continue
        try:
            signature = pair_signature(path, gt_path, cfg)
        except OSError as exc:
            failures.append(f"{path}: cannot read ({exc.strerror or exc})")
            continue
        signatures[key] = signature
        if rows.get(key, {}).get("signature") != signature:  # another file or setting under this name
            rows.pop(key, None)
        done = rows.get(key, {})
        missing = [m for m in per_image if any(done.get(c, "") in ("", None) for c in metric_spec(m).columns)]
        if missing:
            todo.append((path, key, gt_path, missing))
    if auto_paired:
        log(f"iqpfr eval: {auto_paired} per-face output(s) NAME_NN paired with the GT image NAME")
    for msg in failures:
        log(f"iqpfr eval: {msg}")

    computer = MetricComputer(cfg)
    computer.prepare(sorted({m for *_, missing in todo for m in missing}) + set_level)
    if todo:
        bar = _progress(len(todo), "eval", cfg.progress)
        for start in range(0, len(todo), max(1, cfg.batch_size)):
            batch = todo[start : start + max(1, cfg.batch_size)]
            loaded = []
            for path, key, gt_path, missing in batch:
                try:
                    loaded.append((key, missing, *_read_pair(path, gt_path, cfg.resize_to_gt)))
                except (ImageReadError, ValueError, OSError) as exc:
                    failures.append(str(exc))
                    log(f"iqpfr eval: {exc}")
            for metric in per_image:
                items = [item for item in loaded if metric in item[1]]
                if not items:
                    continue
                for key, vals in _compute_robustly(computer, metric, items, failures, log):
                    rows.setdefault(key, {"file": key, "signature": signatures[key]}).update(vals)
            write_results_csv(cfg.out_csv, rows, columns)
            bar.update(len(batch))
        bar.close()
    elif not cfg.out_csv.exists() and rows == {}:
        write_results_csv(cfg.out_csv, rows, columns)

    set_values: dict[str, float] = {}
    if set_level:
        from iqpfr.eval.setlevel import set_level_metrics

        set_values = set_level_metrics(cfg, set_level, [p for p, _ in pred_files], computer, log)

    valid_keys = {rel.as_posix() for _, rel in pred_files}
    final_rows = [rows[k] for k in sorted(rows) if k in valid_keys]
    summary = report.build_summary(cfg, metrics, final_rows, set_values, failures)
    report.write_summary(cfg.out_csv, summary)
    if cfg.plots:
        try:
            report.plot_distributions(cfg.out_csv, final_rows, columns)
        except ImportError as exc:
            log(f"iqpfr eval: plots skipped ({exc})")
    return EvalResult(rows=final_rows, summary=summary, failures=failures)
