"""Combining several quality metrics into the paper's ensemble score S (method.md section 4.2).

Each metric i is min-max normalised over the whole scored set with its direction fixed so that higher
is better:

    s~_i = (s_i - min_i) / (max_i - min_i + 1e-6)     if higher is better
    s~_i = (max_i - s_i) / (max_i - min_i + 1e-6)     if lower is better (NIQE, PIQE, BRISQUE)

and S = mean_i s~_i, in [0, 1). The HQ+ subset is {S > threshold} (0.70 in the IQPFR stage-I config).
:class:`QualityEnsemble` applies fixed (min, max) ranges to live scorers, e.g. as a training loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from iqpfr.quality.base import QualityScorer

EPS = 1e-6


def minmax_normalize(values: Sequence[float] | np.ndarray, higher_better: bool,
                     lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Normalise to [0, 1) with higher = better; ``lo``/``hi`` default to the min/max of ``values``.

    NaN entries stay NaN and are ignored for the min and max.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if lo is None:
        lo = float(finite.min()) if finite.size else 0.0
    if hi is None:
        hi = float(finite.max()) if finite.size else 0.0
    out = (v - lo) if higher_better else (hi - v)
    return out / (hi - lo + EPS)


def ensemble_average(normalized: Sequence[np.ndarray]) -> np.ndarray:
    """S = mean over metrics of the normalised scores (per image); NaN where any metric is NaN."""
    if not normalized:
        raise ValueError("no metrics to average")
    return np.mean(np.stack([np.asarray(n, dtype=np.float64) for n in normalized]), axis=0)


def hq_split_summary(scores: Sequence[float] | np.ndarray, threshold: float = 0.7) -> dict:
    """Share of images with S > threshold (the HQ+ subset) and the floor(10 S) bucket counts."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    n = int(s.size)
    n_hq = int((s > threshold).sum())
    buckets = np.bincount(np.clip(np.floor(10 * s).astype(int), 0, 9), minlength=10) if n else np.zeros(10, int)
    return {
        "n": n, "threshold": float(threshold), "n_hq": n_hq, "share_hq": (n_hq / n) if n else math.nan,
        "mean": float(s.mean()) if n else math.nan, "median": float(np.median(s)) if n else math.nan,
        "buckets": [int(b) for b in buckets],
    }


def format_summary(summary: dict) -> str:
    """One-paragraph text of :func:`hq_split_summary` for the terminal."""
    lines = [f"HQ+ split: {summary['n_hq']} of {summary['n']} images have S > {summary['threshold']:.2f} "
             f"({100 * summary['share_hq']:.1f}%); mean S {summary['mean']:.3f}, median {summary['median']:.3f}"]
    lines.append("S buckets floor(10 S) 0..9: " + " ".join(str(b) for b in summary["buckets"]))
    return "\n".join(lines)


def load_ranges(sidecar: str | Path) -> dict[str, tuple[float, float]]:
    """Per-metric (min, max) from the ``<csv>.json`` that ``iqpfr score`` writes next to its CSV."""
    import json

    info = json.loads(Path(sidecar).read_text(encoding="utf-8"))
    return {m: (float(v[0]), float(v[1])) for m, v in info.get("normalisation", {}).items() if v}


class QualityEnsemble(QualityScorer):
    """Mean of several scorers, each mapped to [0, 1] (higher better) with fixed (min, max) ranges.

    ``ranges[name] = (min, max)`` as measured on a reference set, e.g. ``load_ranges("ffhq.csv.json")``
    from an ``iqpfr score`` run, so the loss uses the same scale as the dataset's S; a scorer without an
    entry uses its typical ``range``. Differentiable when every member is.
    """

    name = "ensemble"
    higher_better = True
    range = (0.0, 1.0)

    def __init__(self, scorers: Sequence[QualityScorer], ranges: dict[str, tuple[float, float]] | None = None) -> None:
        super().__init__()
        if not scorers:
            raise ValueError("an ensemble needs at least one scorer")
        self.members = torch.nn.ModuleList(scorers)
        self.ranges = {s.name: tuple((ranges or {}).get(s.name, s.range)) for s in scorers}
        self.differentiable = all(s.differentiable for s in scorers)
        self.name = "ensemble(" + ",".join(s.name for s in scorers) + ")"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        for s in self.members:
            lo, hi = self.ranges[s.name]
            raw = s(images)
            parts.append(((raw - lo) if s.higher_better else (hi - raw)) / (hi - lo + EPS))
        return torch.stack(parts).mean(dim=0)
