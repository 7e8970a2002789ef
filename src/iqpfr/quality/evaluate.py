"""Measuring a quality scorer on faces it never saw (``iqpfr iqa eval``).

- :func:`strength_correlation`: each face plus ``n_degraded`` copies from the "small"/"large" presets
  (seeded); Spearman correlation between the score (oriented so higher = better) and minus the
  degradation strength, pooled over all images and averaged per face.
- :func:`pair_accuracy`: how often a clean face outscores its degraded copy (one draw per face).
- :func:`score_distribution`: summary statistics of the scores of a folder (real LQ vs HQ faces).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from iqpfr.quality.base import QualityScorer
from iqpfr.quality.synth import degrade_face, draw_params, to_size


def oriented_scores(scorer: QualityScorer, images: list[np.ndarray], batch_size: int = 16,
              device: torch.device | str = "cpu") -> np.ndarray:
    """Scores of uint8 (H, W, 3) images (same size within a call), negated for lower-better metrics."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.stack(images[i: i + batch_size])).permute(0, 3, 1, 2).float().div(255).to(device)
            out.append(scorer.score(x).double().cpu().numpy())
    s = np.concatenate(out) if out else np.zeros(0)
    return s if scorer.higher_better else -s


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


def strength_correlation(scorer: QualityScorer, faces: list[np.ndarray], *, n_degraded: int = 4, seed: int = 0,
                         presets: tuple[str, ...] = ("small", "large"), size: int = 512,
                         batch_size: int = 16, device: torch.device | str = "cpu") -> dict:
    """Spearman(score, -strength) over faces and seeded degraded copies; see the module docstring."""
    scores, strengths, groups = [], [], []
    for i, face in enumerate(faces):
        rng = np.random.default_rng([seed, i])
        params = [draw_params(rng, presets) for _ in range(n_degraded)]
        images = [to_size(face, size)] + [degrade_face(face, p, seed * 100003 + i, size) for p in params]
        scores.append(oriented_scores(scorer, images, batch_size, device))
        strengths.append(np.array([0.0] + [p.strength for p in params]))
        groups.append(np.full(len(images), i))
    s, t = np.concatenate(scores), np.concatenate(strengths)
    per_face = [spearman(a, -b) for a, b in zip(scores, strengths)]
    return {"n_faces": len(faces), "n_images": int(s.size), "spearman_pooled": spearman(s, -t),
            "spearman_per_face_mean": float(np.nanmean(per_face)) if per_face else math.nan}


def pair_accuracy(scorer: QualityScorer, faces: list[np.ndarray], *, preset: str = "large", seed: int = 0,
                  size: int = 512, batch_size: int = 16, device: torch.device | str = "cpu") -> dict:
    """Fraction of faces scoring above their degraded copy (one ``preset`` draw per face, seeded)."""
    clean = [to_size(f, size) for f in faces]
    degraded = []
    for i, face in enumerate(faces):
        rng = np.random.default_rng([seed, 7, i])
        degraded.append(degrade_face(face, draw_params(rng, (preset,)), seed * 100003 + i, size))
    a, b = oriented_scores(scorer, clean, batch_size, device), oriented_scores(scorer, degraded, batch_size, device)
    return {"n": len(faces), "preset": preset, "fraction_hq_higher": float(np.mean(a > b)) if len(faces) else math.nan,
            "margins": (a - b).tolist()}


def score_distribution(scorer: QualityScorer, faces: list[np.ndarray], *, size: int = 512,
                       batch_size: int = 16, device: torch.device | str = "cpu") -> dict:
    """Mean, std, quartiles of raw scores of faces resized to ``size``."""
    s = oriented_scores(scorer, [to_size(f, size) for f in faces], batch_size, device)
    s = s if scorer.higher_better else -s  # report raw values
    if s.size == 0:
        return {"n": 0}
    q = np.percentile(s, [0, 25, 50, 75, 100])
    return {"n": int(s.size), "mean": float(s.mean()), "std": float(s.std()),
            "min": float(q[0]), "q25": float(q[1]), "median": float(q[2]), "q75": float(q[3]), "max": float(q[4])}


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    p, n = np.asarray(positive, float)[:, None], np.asarray(negative, float)[None, :]
    if p.size == 0 or n.size == 0:
        return math.nan
    return float(((p > n) + 0.5 * (p == n)).mean())


def read_faces(paths: Sequence[Path]) -> list[np.ndarray]:
    """Read image files as uint8 RGB (errors propagate: evaluation sets must be complete)."""
    from iqpfr.io import read_rgb

    return [read_rgb(p) for p in paths]
