"""Training targets at several quality levels, and the map from a level to the quality target q.

``adjust_quality(ref, s)`` moves a reference image along one quality axis, s in [-1, 1]: s = 0 is the
reference itself; s > 0 raises local detail (unsharp masking), luma contrast and saturation, the
things UIQM (colourfulness, sharpness, contrast) and UCIQE (chroma spread, luminance contrast,
saturation) measure; s < 0 lowers them. Contrast acts on the luma only and saturation on the
chroma around the image's mean colour, so the mean colour (a residual cast) is not amplified: an
earlier version scaled the colour offsets with both, and a model trained on it turned greener at
high q, which lowers UIQM's block contrast term. The operator works on whole images (its means
are per-image), so targets are built before cropping. Measured on the training references
(MODEL_CARD.md, "Underwater"): UICM, UISM, UCIQE and its three terms rise with s; UIConM falls (its
logAMEE peaks at a block contrast of 1/e and most reference blocks are above it; no gain mix of
detail, contrast, saturation, brightness or gamma tried raised it together with UCIQE).

The quality target q of level s is the ensemble score S (method.md 4.2) of the adjusted training
references, each of UIQM and UCIQE min-max normalised over all levels of all training references,
averaged over the references: ``q = Q(s)``, monotone by construction of the calibration (a
calibration that is not monotone raises). ``q = Q(0)`` (the references' own level) is the default.
"""

from __future__ import annotations

import numpy as np
import torch

from iqpfr.tasks.underwater.model import TONE_EPS, tone_logits

LEVELS = (-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0)


def adjust_quality(ref: torch.Tensor, s: torch.Tensor | float) -> torch.Tensor:
    """ref (B, 3, H, W) in [0, 1], s (B,) or float in [-1, 1] -> adjusted (B, 3, H, W) in (0, 1).

    Works in the logit domain so that stronger contrast never clips to exactly 0 or 1 (a clipped
    block has min 0 or max-min = max+min, which UIQM's EME and logAMEE score as featureless).
    """
    s = torch.as_tensor(s, dtype=ref.dtype, device=ref.device).reshape(-1).expand(ref.shape[0])[:, None, None, None]
    z = tone_logits(torch.logit(ref.clamp(TONE_EPS, 1.0 - TONE_EPS)), 0.8 * s, 0.35 * s, 0.5 * s)
    out = torch.sigmoid(z)
    # s = 0 returns the reference exactly (the logit round trip would move 8-bit values)
    return torch.where(s == 0, ref, out)


class QualityCalibration:
    """Monotone map between adjustment level s and quality target q (piecewise linear)."""

    def __init__(self, levels: list[float], q: list[float], ranges: dict[str, list[float]]) -> None:
        self.levels, self.q, self.ranges = [float(v) for v in levels], [float(v) for v in q], ranges
        if any(b <= a for a, b in zip(self.q, self.q[1:])):
            raise ValueError(f"quality calibration is not increasing: {self.q}")

    def q_of_s(self, s: np.ndarray | float) -> np.ndarray:
        return np.interp(s, self.levels, self.q)

    def s_of_q(self, q: np.ndarray | float) -> np.ndarray:
        return np.interp(q, self.q, self.levels)

    @property
    def default_q(self) -> float:
        return float(self.q_of_s(0.0))

    def to_dict(self) -> dict:
        return {"levels": self.levels, "q": self.q, "ranges": self.ranges}

    @classmethod
    def from_dict(cls, d: dict) -> QualityCalibration:
        return cls(d["levels"], d["q"], d["ranges"])


def calibrate(references: list[torch.Tensor], levels: tuple[float, ...] = LEVELS) -> QualityCalibration:
    """Score every reference (1, 3, H, W) at every level with UIQM and UCIQE -> the calibration."""
    from iqpfr.quality.uciqe import UCIQE
    from iqpfr.quality.uiqm import UIQM

    scorers = {"uiqm": UIQM(), "uciqe": UCIQE()}
    raw = {k: np.zeros((len(references), len(levels))) for k in scorers}
    with torch.no_grad():
        for i, ref in enumerate(references):
            for j, s in enumerate(levels):
                # scored as saved (8-bit), like every image the evaluation scores
                img = torch.round(adjust_quality(ref, s) * 255.0) / 255.0
                for k, scorer in scorers.items():
                    raw[k][i, j] = float(scorer(img))
    ranges, norm = {}, []
    for k, v in raw.items():
        lo, hi = float(v.min()), float(v.max())
        ranges[k] = [lo, hi]
        norm.append((v - lo) / (hi - lo + 1e-6))
    q = np.mean(np.stack(norm), axis=0).mean(axis=0)  # (levels,)
    return QualityCalibration(list(levels), [float(v) for v in q], ranges)
