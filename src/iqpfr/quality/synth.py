"""Degraded copies of faces with a known strength, for training and measuring quality scorers.

Built on the blind degradation model of :mod:`iqpfr.data.degradations` (mixed Gaussian blur,
bilinear down-sampling, Gaussian noise, JPEG; "small"/"large" presets) and its scalar ``strength``
(0 = clean, 1 = harshest corner of the "large" range). Faces are degraded at ``degrade_size``
(512, the size the restoration network sees), so parameters keep their meaning in pixels of a
512x512 face, then returned at that size.

Two ways to get several copies of one face:
- independent draws from presets (:func:`draw_params`);
- a *ladder*: one draw scaled from "nothing" (fraction 0) to the full draw (fraction 1) with
  :func:`scale_params`, optionally restricted to a single operation (blur, down-sampling, noise or
  JPEG). Along a ladder the image gets monotonically worse, which gives clean ranking pairs.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from iqpfr.data.degradations import (
    DegradationConfig,
    DegradationParams,
    apply_degradation,
    degradation_strength,
    sample_params,
)

OPS = ("blur", "down", "noise", "jpeg")
_IDENTITY_SIGMA = 0.1  # a 41x41 Gaussian this narrow is a delta


def draw_params(rng: np.random.Generator, presets: tuple[str, ...] = ("small", "large")) -> DegradationParams:
    """One blind degradation from a preset chosen uniformly among ``presets``."""
    name = presets[int(rng.integers(len(presets)))]
    return sample_params(DegradationConfig.preset(name), rng)


def scale_params(p: DegradationParams, fraction: float, only: str | None = None) -> DegradationParams:
    """Move ``p`` towards the identity: fraction 1 keeps it, 0 is (almost) no degradation.

    Blur sigma and noise scale linearly, the down-sampling factor geometrically, JPEG quality
    linearly towards 100. ``only`` (one of :data:`OPS`) keeps a single operation active.
    """
    f = float(np.clip(fraction, 0.0, 1.0))

    def active(op: str) -> float:
        return f if only in (None, op) else 0.0

    fb, fd, fn, fj = (active(op) for op in OPS)
    sx = _IDENTITY_SIGMA + fb * (p.sigma_x - _IDENTITY_SIGMA)
    sy = _IDENTITY_SIGMA + fb * (p.sigma_y - _IDENTITY_SIGMA)
    scale = math.exp(fd * math.log(max(p.scale, 1.0)))
    noise = fn * p.noise
    quality = int(round(100 - fj * (100 - p.jpeg_quality)))
    strength = degradation_strength(sx if fb else 0.0, sy if fb else 0.0, scale, noise, quality)
    return dataclasses.replace(p, sigma_x=sx, sigma_y=sy, scale=scale, noise=noise, jpeg_quality=quality,
                               color_shift=None, photometric=None, gray=False, strength=strength)


def to_size(img: np.ndarray, size: int) -> np.ndarray:
    """Square uint8 RGB resize: area filter when shrinking, bicubic when enlarging."""
    if img.shape[:2] == (size, size):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def degrade_face(img: np.ndarray, params: DegradationParams, noise_seed: int, degrade_size: int = 512) -> np.ndarray:
    """Degrade a uint8 RGB face at ``degrade_size`` (resized first); returns uint8 at that size.

    The noise field comes from ``noise_seed``, so copies on one ladder share it (monotone noise).
    A strength-0 ``params`` returns the resized clean face untouched.
    """
    face = to_size(img, degrade_size)
    if params.strength <= 0.0:
        return face
    return apply_degradation(face, params, rng=np.random.default_rng(noise_seed))


def degrade_face_fast(img: np.ndarray, params: DegradationParams, noise_seed: int, ref_size: int = 512) -> np.ndarray:
    """Approximately ``to_size(degrade_face(img, params, ref_size), img size)``, at the image's own size.

    For a face smaller than ``ref_size`` (e.g. a 256 training face) this skips the up-sampling: the
    blur runs at the small size with sigma scaled by size / ref_size, the down-sampling goes straight to
    the same ``int(ref_size / r)`` pixels, noise and JPEG are identical, and the result is resized back to
    the input size. About 10x cheaper; used for training, while evaluation uses :func:`degrade_face`.
    """
    from iqpfr.data.degradations import gaussian_kernel

    h, w = img.shape[:2]
    if params.strength <= 0.0:
        return img
    k = h / ref_size
    sx, sy = max(params.sigma_x * k, 0.05), max(params.sigma_y * k, 0.05)
    size = min(int(2 * math.ceil(3 * max(sx, sy)) + 1), 41)
    x = img.astype(np.float32) / 255.0
    x = cv2.filter2D(x, -1, gaussian_kernel(size, sx, sy, params.theta), borderType=cv2.BORDER_REFLECT_101)
    small = max(1, int(ref_size / params.scale))
    interp = cv2.INTER_LINEAR if small >= h else cv2.INTER_AREA
    x = cv2.resize(x, (small, small), interpolation=interp)
    if params.noise > 0:
        x = x + np.random.default_rng(noise_seed).standard_normal(x.shape, dtype=np.float32) * np.float32(params.noise / 255.0)
    x8 = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(x8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(params.jpeg_quality)])
    x8 = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    interp = cv2.INTER_AREA if small > w else cv2.INTER_LINEAR
    return cv2.resize(x8, (w, h), interpolation=interp)
