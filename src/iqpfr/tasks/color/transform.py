"""A global colour transform fitted from face crops to their enhanced versions (whole-photo coherence).

The network only recolours the aligned face; the rest of the photo would keep its cast, fading or
gray. ``fit_color_transform`` finds one 3x4 affine map M (linear-light RGB, ``y = M @ [r, g, b, 1]``)
taking the input face pixels to the enhanced ones, weighted by the face mask and pulled toward the
identity (ridge regression), and ``apply_color_transform`` applies it to any image.

On a gray input (r = g = b = Y) only the column sum of M's 3x3 part is determined: the ridge term
splits it evenly, and the map becomes ``channel_c = s_c * Y + b_c``, a fitted luminance -> chroma
toning (each channel a linear function of luminance). So a global affine map does NOT keep a gray
photo gray; ``iqpfr.tasks.color.enhancer`` decides what to do with it (``gray_background``).
"""

from __future__ import annotations

import numpy as np

IDENTITY = np.hstack([np.eye(3), np.zeros((3, 1))]).astype(np.float64)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear light, same shape (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0.04045, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4, x / 12.92)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB in [0, 1] (clipped), same shape (float64)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x > 0.0031308, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055, 12.92 * x)


def fit_color_transform(
    source: np.ndarray | list[np.ndarray],
    target: np.ndarray | list[np.ndarray],
    weights: np.ndarray | list[np.ndarray] | None = None,
    *,
    reg: float = 1e-3,
) -> np.ndarray:
    """The (3, 4) affine map (linear RGB) taking ``source`` pixels to ``target`` pixels.

    source / target: (..., 3) sRGB in [0, 1] of the same shape, or lists of such arrays (several
    faces of one photo). weights: (...) >= 0 per pixel (e.g. the soft face mask), default 1.
    reg: ridge strength toward the identity, relative to the total weight (so it does not depend
    on the number of pixels); 0 is plain weighted least squares.
    Minimises sum_i w_i |M x_i - y_i|^2 + reg * sum_i w_i * |M - [I | 0]|^2 in closed form.
    """
    sources = source if isinstance(source, list) else [source]
    targets = target if isinstance(target, list) else [target]
    if weights is None:
        weight_list = [np.ones(np.shape(s)[:-1]) for s in sources]
    else:
        weight_list = weights if isinstance(weights, list) else [weights]
    if not (len(sources) == len(targets) == len(weight_list)) or not sources:
        raise ValueError("source, target and weights need the same (non-zero) number of arrays")
    xs, ys, ws = [], [], []
    for s, t, w in zip(sources, targets, weight_list):
        s, t = np.asarray(s), np.asarray(t)
        if s.shape != t.shape or s.shape[-1] != 3:
            raise ValueError(f"source {s.shape} and target {t.shape} must be equal (..., 3) arrays")
        xs.append(srgb_to_linear(s.reshape(-1, 3)))
        ys.append(srgb_to_linear(t.reshape(-1, 3)))
        ws.append(np.broadcast_to(np.asarray(w, np.float64), s.shape[:-1]).reshape(-1))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    w = np.concatenate(ws)
    total = float(w.sum())
    if total <= 0:
        return IDENTITY.copy()
    xh = np.hstack([x, np.ones((len(x), 1))])  # (N, 4)
    lam = reg * total
    a = (xh * w[:, None]).T @ xh + lam * np.eye(4)  # (4, 4)
    b = (xh * w[:, None]).T @ y + lam * IDENTITY.T  # (4, 3)
    return np.linalg.solve(a, b).T


def apply_color_transform(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (3, 4) linear-RGB affine map to ``image`` (..., 3) sRGB in [0, 1] -> same shape, float32 in [0, 1]."""
    shape = image.shape
    lin = srgb_to_linear(image.reshape(-1, 3))
    out = lin @ matrix[:, :3].T + matrix[:, 3]
    return linear_to_srgb(out).reshape(shape).astype(np.float32)


def is_gray(image: np.ndarray, tolerance: float = 2.0 / 255) -> bool:
    """Whether an (..., 3) image in [0, 1] has (almost) no colour: its 99th-percentile channel spread."""
    spread = image.max(axis=-1) - image.min(axis=-1)
    return float(np.percentile(spread, 99)) <= tolerance
