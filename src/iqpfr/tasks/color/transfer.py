"""Colour transfer by moment matching: the input face's colour statistics are moved onto the
enhanced face's (the network is the colour reference), and the fitted map is applied to the input.

Unlike the least-squares map of ``iqpfr.tasks.color.transform`` (which regresses the output on the
input pixel by pixel, so its gains shrink wherever the 128-px network output is smoother than the
input, or its colours do not follow the input's pixels), a moment-matching map only equates
statistics: weighted means and standard deviations (``diagonal``: one gain and offset per channel,
a von Kries model for casts and fading) or the full covariance (``mk``: the Monge-Kantorovich
linear map, the optimal-transport map between two Gaussians). The statistics are taken on both
images blurred by the same Gaussian (``blur``), so a sharper input than reference does not lower
the gains, and over the face mask (``weights``) only.

Spaces: ``lab`` (CIELab, D65), ``linrgb`` (linear-light RGB) or ``srgb``.

A gray input has no chroma to scale: ``chroma_from_reference`` keeps the input's lightness and takes
the reference's a/b per pixel, times ``chroma`` (a shrink factor: a wrong hue costs more CIEDE2000
than no colour), which exists only where the reference exists (the face crop); a global fallback for
the rest of a photo is ``fit_tone`` (a and b as linear functions of L on the face).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iqpfr.tasks.color.transform import linear_to_srgb, srgb_to_linear

SPACES = ("lab", "linrgb", "srgb")
METHODS = ("diagonal", "mk")


def _per_pixel(convert, x: np.ndarray) -> np.ndarray:
    """Apply a (B, 3, H, W) torch colour conversion of ``iqpfr.quality.colour`` to (..., 3) numpy values."""
    import torch

    x = np.asarray(x, np.float64)
    t = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, 3).T))[None, :, :, None]
    return convert(t)[0, :, :, 0].T.numpy().reshape(x.shape)


def srgb_to_lab(x: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> CIELab (..., 3), L in [0, 100] (``iqpfr.quality.colour``, as the metrics)."""
    from iqpfr.quality.colour import srgb_to_lab as convert

    return _per_pixel(convert, x)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELab (..., 3) -> sRGB (..., 3) in [0, 1] (clipped; the inverse of ``srgb_to_lab`` in gamut)."""
    from iqpfr.quality.colour import lab_to_srgb as convert

    return _per_pixel(convert, lab)


def to_space(x: np.ndarray, space: str) -> np.ndarray:
    if space == "lab":
        return srgb_to_lab(x)
    if space == "linrgb":
        return srgb_to_linear(x)
    if space == "srgb":
        return np.asarray(x, np.float64)
    raise ValueError(f"space must be one of {'|'.join(SPACES)}, got {space!r}")


def from_space(x: np.ndarray, space: str) -> np.ndarray:
    if space == "lab":
        return lab_to_srgb(x)
    if space == "linrgb":
        return linear_to_srgb(x)
    return np.clip(x, 0.0, 1.0)


@dataclass
class ColorTransfer:
    """An affine map ``y = matrix @ x + offset`` in ``space`` (x, y: (3,) colour vectors)."""

    matrix: np.ndarray  # (3, 3)
    offset: np.ndarray  # (3,)
    space: str

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(..., 3) sRGB in [0, 1] -> the mapped image, same shape, float32 in [0, 1]."""
        shape = image.shape
        x = to_space(np.asarray(image, np.float64).reshape(-1, 3), self.space)
        return from_space(x @ self.matrix.T + self.offset, self.space).reshape(shape).astype(np.float32)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.asarray(image, np.float64)
    import cv2

    return cv2.GaussianBlur(np.asarray(image, np.float64), (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT)


def _moments(pixels: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = w / max(float(w.sum()), 1e-12)
    mu = w @ pixels
    d = pixels - mu
    return mu, (d * w[:, None]).T @ d


def _sqrtm(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((c + c.T) / 2)
    return (vecs * np.sqrt(np.maximum(vals, 0.0))) @ vecs.T


def fit_transfer(
    source: np.ndarray | list[np.ndarray],
    reference: np.ndarray | list[np.ndarray],
    weights: np.ndarray | list[np.ndarray] | None = None,
    *,
    method: str = "diagonal",
    space: str = "lab",
    blur: float = 1.0,
    max_gain: float = 4.0,
    eps: float = 1e-6,
) -> ColorTransfer:
    """Moment-matching map from ``source`` (input face crops, (..., 3) sRGB [0, 1]) to ``reference``
    (their enhanced versions, same shapes), weighted per pixel by ``weights`` (e.g. the soft face mask).

    method: ``diagonal`` (per-channel gain = std ratio, offset matches the means) or ``mk``
    (full-covariance Monge-Kantorovich map). blur: the Gaussian sigma (pixels) applied to both
    images before the statistics (0: none). max_gain: gains (diagonal) / singular values (mk) are
    capped, so a flat channel (e.g. the chroma of a gray input) is not blown up.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {'|'.join(METHODS)}, got {method!r}")
    sources = source if isinstance(source, list) else [source]
    refs = reference if isinstance(reference, list) else [reference]
    ws = weights if isinstance(weights, list) else [weights] * len(sources)
    if not (len(sources) == len(refs) == len(ws)) or not sources:
        raise ValueError("source, reference and weights need the same (non-zero) number of arrays")
    xs, ys, wl = [], [], []
    for s, r, w in zip(sources, refs, ws):
        s, r = np.asarray(s, np.float64), np.asarray(r, np.float64)
        if s.shape != r.shape or s.shape[-1] != 3:
            raise ValueError(f"source {s.shape} and reference {r.shape} must be equal (..., 3) arrays")
        xs.append(to_space(_blur(s, blur).reshape(-1, 3), space))
        ys.append(to_space(_blur(r, blur).reshape(-1, 3), space))
        wl.append(np.ones(s.shape[:-1]).reshape(-1) if w is None
                  else np.broadcast_to(np.asarray(w, np.float64), s.shape[:-1]).reshape(-1))
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(wl)
    if float(w.sum()) <= 0:
        return ColorTransfer(np.eye(3), np.zeros(3), space)
    mx, cx = _moments(x, w)
    my, cy = _moments(y, w)
    if method == "diagonal":
        sx, sy = np.sqrt(np.maximum(np.diag(cx), 0)), np.sqrt(np.maximum(np.diag(cy), 0))
        gains = np.where(sx > eps, np.minimum(sy / np.maximum(sx, eps), max_gain), 1.0)
        matrix = np.diag(gains)
    else:
        reg = eps * max(np.trace(cx), 1e-12) * np.eye(3)
        half = _sqrtm(cx + reg)
        inv_half = np.linalg.inv(half)
        matrix = inv_half @ _sqrtm(half @ cy @ half) @ inv_half
        u, sv, vt = np.linalg.svd(matrix)
        matrix = (u * np.minimum(sv, max_gain)) @ vt
    return ColorTransfer(matrix, my - matrix @ mx, space)


def chroma_from_reference(source: np.ndarray, reference: np.ndarray, chroma: float = 1.0,
                          blur: float = 0.0) -> np.ndarray:
    """The input's CIELab lightness with the reference's a/b (times ``chroma``; optionally blurred by
    ``blur`` px) -> sRGB float32 (..., 3); source / reference (H, W, 3) sRGB [0, 1]."""
    lab_in = srgb_to_lab(np.asarray(source, np.float64))
    lab_ref = srgb_to_lab(_blur(reference, blur))
    out = np.concatenate([lab_in[..., :1], chroma * lab_ref[..., 1:]], -1)
    return lab_to_srgb(out).astype(np.float32)


def fit_tone(source: np.ndarray | list[np.ndarray], reference: np.ndarray | list[np.ndarray],
             weights: np.ndarray | list[np.ndarray] | None = None, *, chroma: float = 1.0) -> ColorTransfer:
    """For a gray input: a and b of the reference as linear functions of the input's L (weighted least
    squares on the face), L kept; a whole-photo toning. Returned as a Lab ``ColorTransfer``."""
    sources = source if isinstance(source, list) else [source]
    refs = reference if isinstance(reference, list) else [reference]
    ws = weights if isinstance(weights, list) else [weights] * len(sources)
    lin, ab, wl = [], [], []
    for s, r, w in zip(sources, refs, ws):
        ls, lr = srgb_to_lab(np.asarray(s, np.float64)), srgb_to_lab(np.asarray(r, np.float64))
        lin.append(ls[..., 0].reshape(-1))
        ab.append(lr[..., 1:].reshape(-1, 2))
        wl.append(np.ones(ls.shape[:-1]).reshape(-1) if w is None
                  else np.broadcast_to(np.asarray(w, np.float64), ls.shape[:-1]).reshape(-1))
    lum, ab, w = np.concatenate(lin), np.concatenate(ab), np.concatenate(wl)
    design = np.stack([lum, np.ones_like(lum)], 1)
    a = (design * w[:, None]).T @ design + 1e-6 * np.eye(2)
    coef = np.linalg.solve(a, (design * w[:, None]).T @ ab) * chroma  # (2, 2): rows slope, intercept
    matrix = np.zeros((3, 3))
    matrix[0, 0] = 1.0
    matrix[1:, 0] = coef[0]
    return ColorTransfer(matrix, np.array([0.0, coef[1, 0], coef[1, 1]]), "lab")
