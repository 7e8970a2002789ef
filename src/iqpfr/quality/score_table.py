"""The score CSV of ``iqpfr score``: raw metric values per image, normalised columns and the ensemble S.

Columns: ``path, imagename, <metric>..., <metric>_norm..., score`` (see :mod:`iqpfr.cli.score`).
A JSON sidecar (``<csv>.json``) records each metric's direction, min/max over the set, scorer
provenance and the HQ+ summary.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from iqpfr.quality.ensemble import ensemble_average, hq_split_summary, minmax_normalize

FIXED = ("path", "imagename", "score")
LOWER_BETTER = {"niqe", "piqe", "brisque"}


class ScoreTable:
    """Rows keyed by image path, in insertion order; ``finalize()`` fills ``_norm`` and ``score``."""

    def __init__(self, metrics: list[str]) -> None:
        self.metrics = list(metrics)
        self.rows: dict[str, dict[str, float]] = {}
        self.norm: dict[str, np.ndarray] = {}
        self.score: np.ndarray = np.zeros(0)
        self.provenance: dict[str, dict] = {}
        self.summary: dict = {}

    @classmethod
    def load(cls, path: str | Path, metrics: list[str]) -> ScoreTable:
        """Read an existing CSV to resume it; its metrics must be a subset of ``metrics``."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        reader = csv.DictReader(io.StringIO(text))
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise ValueError(f"{path}: not an iqpfr score CSV (no 'path' column); choose another -o")
        old_metrics = [c for c in columns if c not in FIXED and not c.endswith("_norm")]
        extra = [m for m in old_metrics if m not in metrics]
        if extra:
            raise ValueError(f"{path} also holds metric(s) {', '.join(extra)} not in --metrics; "
                             "list them too or write to another -o (nothing is dropped from an existing CSV)")
        table = cls(metrics)
        for row in reader:
            table.rows[row["path"]] = {m: _parse(row.get(m)) for m in metrics}
        sidecar = _sidecar(path)
        if sidecar.is_file():
            try:
                table.provenance = json.loads(sidecar.read_text(encoding="utf-8")).get("metrics_info", {})
            except (OSError, ValueError):
                pass
        return table

    def is_complete(self, path: str) -> bool:
        row = self.rows.get(path)
        return row is not None and all(math.isfinite(row.get(m, math.nan)) for m in self.metrics)

    def add(self, path: str, values: dict[str, float]) -> None:
        row = self.rows.setdefault(path, {m: math.nan for m in self.metrics})
        row.update(values)

    def higher_better(self, metric: str) -> bool:
        info = self.provenance.get(metric, {})
        if "higher_better" in info:
            return bool(info["higher_better"])
        return metric.lower() not in LOWER_BETTER

    def finalize(self, threshold: float = 0.7) -> None:
        """Min-max normalise every metric over all rows (higher = better) and average into S."""
        for m in self.metrics:
            raw = np.array([r.get(m, math.nan) for r in self.rows.values()], dtype=np.float64)
            self.norm[m] = minmax_normalize(raw, self.higher_better(m)) if raw.size else raw
        self.score = ensemble_average([self.norm[m] for m in self.metrics]) if self.rows else np.zeros(0)
        self.summary = hq_split_summary(self.score, threshold)

    def columns(self) -> list[str]:
        return ["path", "imagename", *self.metrics, *(f"{m}_norm" for m in self.metrics), "score"]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns())
        finalized = len(self.score) == len(self.rows)
        for i, (path, row) in enumerate(self.rows.items()):
            raw = [_fmt(row.get(m, math.nan)) for m in self.metrics]
            if finalized:
                norm = [_fmt(self.norm[m][i]) for m in self.metrics]
                s = _fmt(self.score[i])
            else:  # a partial save while scoring: normalisation comes at the end
                norm, s = [""] * len(self.metrics), ""
            writer.writerow([path, Path(path).name, *raw, *norm, s])
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        """Write the CSV and its JSON sidecar atomically."""
        from iqpfr.utils.fs import atomic_write_text

        path = Path(path)
        atomic_write_text(path, self.to_csv())
        info = {
            "columns": self.columns(),
            "metrics": self.metrics,
            "higher_better": {m: self.higher_better(m) for m in self.metrics},
            "normalisation": {m: _minmax(self.rows, m) for m in self.metrics},
            "metrics_info": self.provenance,
            "hq_split": self.summary,
        }
        atomic_write_text(_sidecar(path), json.dumps(info, indent=2, default=_json_default) + "\n")

    def plot_histogram(self, path: str | Path, threshold: float = 0.7) -> Path:
        """Histogram of S with the HQ+ threshold marked (matplotlib, imported here)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from iqpfr.utils.fs import atomic_path

        s = self.score[np.isfinite(self.score)]
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.hist(s, bins=np.linspace(0, 1, 21), color="#4C72B0", edgecolor="white")
        ax.axvline(threshold, color="#C44E52", linestyle="--", label=f"HQ+ threshold {threshold:.2f}")
        ax.set_xlabel("ensemble score S (" + ", ".join(self.metrics) + ")")
        ax.set_ylabel("images")
        share = self.summary.get("share_hq", math.nan)
        ax.set_title(f"{len(s)} images; {100 * share:.1f}% above threshold")
        ax.legend(loc="upper left")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        return Path(path)


def _parse(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _fmt(v: float) -> str:
    return "" if not math.isfinite(v) else f"{v:.8g}"


def _minmax(rows: dict[str, dict[str, float]], metric: str) -> list[float] | None:
    v = np.array([r.get(metric, math.nan) for r in rows.values()], dtype=np.float64)
    v = v[np.isfinite(v)]
    return [float(v.min()), float(v.max())] if v.size else None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)
