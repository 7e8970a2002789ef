"""Blind face degradation (CodeFormer / IQPFR training recipe), written in numpy + OpenCV.

    y = round( resize_back( JPEG_q( clip( down_r( x * k_sigma ) + n_delta ) ) ) )

- ``k_sigma``: 41x41 Gaussian kernel, isotropic or anisotropic (probability 0.5 each); the
  anisotropic kernel has two independent sigmas and a rotation drawn from U[-pi, pi].
- ``down_r``: bilinear down-sampling by a factor r (output size ``int(size / r)``, at least 1 px).
- ``n_delta``: additive Gaussian noise of standard deviation delta/255 (colour noise, per channel).
- ``JPEG_q``: OpenCV JPEG at integer quality q drawn uniformly from the inclusive range.
- bilinear resize back to the input size, then rounding and clipping to uint8 steps.
- optional, for the colour-enhancement variant (method.md section 10): a per-channel colour shift,
  conversion to gray and a photometric jitter (brightness, contrast, saturation, hue in random
  order), in that order, applied to the LQ image only, after the degradation (as CodeFormer does).

Everything random is drawn from a ``numpy.random.Generator`` passed in, so a sample is a pure function
of (image, config, generator state). :func:`sample_rng` derives the generator of one sample from
``(seed, epoch, index)``, which makes data independent of the number of data-loader workers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

# Reference maxima used to normalise the "strength" terms; they are the upper ends of the "large"
# range (the harshest of the presets), fixed so strengths are comparable across presets.
_STRENGTH_MAX_SIGMA = 15.0
_STRENGTH_MAX_SCALE = 30.0
_STRENGTH_MAX_NOISE = 20.0
_STRENGTH_MIN_JPEG = 30.0


@dataclass
class DegradationConfig:
    """Ranges of the blind degradation; ``(lo, hi)`` pairs are sampled uniformly (inclusive for JPEG).

    Defaults are the "large" setting of method.md section 5.
    """

    kernel_size: int = 41
    iso_prob: float = 0.5  # probability of an isotropic kernel (else anisotropic)
    blur_sigma: tuple[float, float] = (1.0, 15.0)
    rotation: tuple[float, float] = (-math.pi, math.pi)
    downsample: tuple[float, float] = (4.0, 30.0)
    noise: tuple[float, float] = (0.0, 20.0)  # delta, in 8-bit units (sigma = delta / 255)
    jpeg_quality: tuple[int, int] = (30, 80)
    # colour-enhancement options (0 disables them): CodeFormer_colorization uses 0.3 / 20 / 0.3 / 0.01
    color_jitter_prob: float = 0.0
    color_jitter_shift: float = 20.0  # per-channel shift U[-shift, shift] in 8-bit units
    photometric_jitter_prob: float = 0.0
    brightness: tuple[float, float] = (0.5, 1.5)
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.0, 1.5)
    hue: tuple[float, float] = (-0.1, 0.1)  # fraction of a full turn
    gray_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        for name in ("blur_sigma", "rotation", "downsample", "noise", "jpeg_quality", "brightness",
                     "contrast", "saturation", "hue"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
        if self.blur_sigma[0] <= 0:
            raise ValueError(f"blur_sigma must be > 0, got {self.blur_sigma}")
        if self.downsample[0] < 1:
            raise ValueError(f"downsample factors must be >= 1, got {self.downsample}")
        if self.noise[0] < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
        for name in ("iso_prob", "color_jitter_prob", "photometric_jitter_prob", "gray_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DegradationConfig:
        """A named preset (see :data:`PRESETS`), optionally with some fields replaced."""
        if name not in PRESETS:
            raise ValueError(f"unknown degradation preset {name!r}; choose from {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, DegradationConfig] = {
    # stage II (CodeFormer and IQPFR) and stage III code-only steps
    "large": DegradationConfig(),
    # CodeFormer stage III image losses
    "small": DegradationConfig(blur_sigma=(0.1, 10.0), downsample=(1.0, 12.0), noise=(0.0, 15.0),
                               jpeg_quality=(60, 100)),
    # CelebA-Test synthesis (IQPIR scripts/generate_degraded_celeba.py): fixed x8 or x16
    "celeba-x8": DegradationConfig(downsample=(8.0, 8.0)),
    "celeba-x16": DegradationConfig(downsample=(16.0, 16.0)),
    # face colour enhancement (IQPIR options/CodeFormer_colorization.yml): large + colour degradations
    "color": DegradationConfig(color_jitter_prob=0.3, color_jitter_shift=20.0,
                               photometric_jitter_prob=0.3, gray_prob=0.01),
}


@dataclass
class DegradationParams:
    """The parameters sampled for one image, plus a scalar ``strength`` in [0, 1].

    ``strength`` is the mean of four terms, each clipped to [0, 1] with fixed reference maxima:
    ``sqrt(sigma_x*sigma_y)/15``, ``log(r)/log(30)``, ``delta/20`` and ``(100-q)/70``.
    0 means an untouched image, 1 the harshest corner of the "large" range.
    """

    kernel_type: str  # "iso" or "aniso"
    sigma_x: float
    sigma_y: float
    theta: float  # radians
    scale: float  # down-sampling factor r
    noise: float  # delta, 8-bit units
    jpeg_quality: int
    color_shift: list[float] | None = None  # per-channel (R, G, B) shift in 8-bit units, or None
    photometric: dict[str, Any] | None = None  # factors and order of the photometric jitter, or None
    gray: bool = False
    strength: float = field(default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sample_rng(seed: int, epoch: int = 0, index: int = 0) -> np.random.Generator:
    """Generator for one sample, a pure function of (seed, epoch, index) (independent of worker count)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def file_seed_index(relative_path: str) -> int:
    """A stable 32-bit index for a relative path (the per-file ``sample_rng`` key of folder runs)."""
    import zlib

    return zlib.crc32(relative_path.replace("\\", "/").encode("utf-8"))


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """A normalised ``size x size`` bivariate Gaussian, axes rotated by ``theta`` radians (float32)."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    quad = inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy
    kernel = np.exp(-0.5 * quad)
    return (kernel / kernel.sum()).astype(np.float32)


def degradation_strength(sigma_x: float, sigma_y: float, scale: float, noise: float, jpeg_quality: float) -> float:
    """The scalar strength documented in :class:`DegradationParams` (0 = clean, 1 = harshest)."""
    terms = (
        math.sqrt(sigma_x * sigma_y) / _STRENGTH_MAX_SIGMA,
        math.log(max(scale, 1.0)) / math.log(_STRENGTH_MAX_SCALE),
        noise / _STRENGTH_MAX_NOISE,
        (100.0 - jpeg_quality) / (100.0 - _STRENGTH_MIN_JPEG),
    )
    return float(np.mean(np.clip(terms, 0.0, 1.0)))


def sample_params(cfg: DegradationConfig, rng: np.random.Generator) -> DegradationParams:
    """Draw the parameters of one degradation (the draw order is fixed, so it is reproducible)."""
    isotropic = rng.random() < cfg.iso_prob
    sigma_x = float(rng.uniform(*cfg.blur_sigma))
    if isotropic:
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y = float(rng.uniform(*cfg.blur_sigma))
        theta = float(rng.uniform(*cfg.rotation))
    scale = float(rng.uniform(*cfg.downsample))
    noise = float(rng.uniform(*cfg.noise))
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    color_shift = None
    if rng.random() < cfg.color_jitter_prob:
        color_shift = [float(v) for v in rng.uniform(-cfg.color_jitter_shift, cfg.color_jitter_shift, 3)]
    photometric = None
    if rng.random() < cfg.photometric_jitter_prob:
        photometric = {
            "order": [int(i) for i in rng.permutation(4)],
            "brightness": float(rng.uniform(*cfg.brightness)),
            "contrast": float(rng.uniform(*cfg.contrast)),
            "saturation": float(rng.uniform(*cfg.saturation)),
            "hue": float(rng.uniform(*cfg.hue)),
        }
    gray = bool(rng.random() < cfg.gray_prob)
    return DegradationParams(
        kernel_type="iso" if isotropic else "aniso", sigma_x=sigma_x, sigma_y=sigma_y, theta=theta,
        scale=scale, noise=noise, jpeg_quality=quality, color_shift=color_shift, photometric=photometric,
        gray=gray, strength=degradation_strength(sigma_x, sigma_y, scale, noise, quality),
    )


def _jpeg_rgb(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of a float RGB image in [0, 1] (OpenCV expects BGR for the YCbCr conversion)."""
    img8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def _gray(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of float RGB (H, W, 3) -> (H, W)."""
    return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _photometric(img: np.ndarray, jitter: dict[str, Any]) -> np.ndarray:
    """Brightness, contrast, saturation and hue adjustments in the sampled order (float RGB in [0, 1])."""
    for op in jitter["order"]:
        if op == 0:
            img = img * jitter["brightness"]
        elif op == 1:
            mean = _gray(img).mean()
            img = (img - mean) * jitter["contrast"] + mean
        elif op == 2:
            gray = _gray(img)[..., None]
            img = (img - gray) * jitter["saturation"] + gray
        else:
            hsv = cv2.cvtColor(np.clip(img, 0, 1).astype(np.float32), cv2.COLOR_RGB2HSV)  # H in degrees
            hsv[..., 0] = np.mod(hsv[..., 0] + jitter["hue"] * 360.0, 360.0)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        img = np.clip(img, 0.0, 1.0)
    return img.astype(np.float32)


def apply_degradation(img: np.ndarray, params: DegradationParams, kernel_size: int = 41,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply given ``params`` to a uint8 RGB (H, W, 3) image; returns uint8 RGB of the same shape.

    ``rng`` draws the noise field (needed when ``params.noise > 0``).
    """
    _check_image(img)
    h, w = img.shape[:2]
    x = img.astype(np.float32) / 255.0
    kernel = gaussian_kernel(kernel_size, params.sigma_x, params.sigma_y, params.theta)
    x = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    x = cv2.resize(x, (max(1, int(w / params.scale)), max(1, int(h / params.scale))), interpolation=cv2.INTER_LINEAR)
    if params.noise > 0:
        if rng is None:
            raise ValueError("apply_degradation needs an rng to draw the noise field")
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(params.noise / 255.0)
    x = np.clip(x, 0.0, 1.0)
    x = _jpeg_rgb(x, params.jpeg_quality)
    x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    # CodeFormer's order: 8-bit rounding, colour shift, gray, then the photometric jitter
    x = np.round(x * 255.0) / 255.0
    if params.color_shift is not None:
        x = np.clip(x + np.asarray(params.color_shift, dtype=np.float32) / 255.0, 0.0, 1.0)
    if params.gray:
        x = np.repeat(_gray(x)[..., None], 3, axis=2)
    if params.photometric is not None:
        x = _photometric(x, params.photometric)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def degrade(img: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator) -> tuple[np.ndarray, DegradationParams]:
    """Blindly degrade a uint8 RGB (H, W, 3) face; returns (uint8 RGB LQ of the same shape, params)."""
    params = sample_params(cfg, rng)
    return apply_degradation(img, params, cfg.kernel_size, rng), params


def sharpness_variant(img: np.ndarray, level: float, scale: float = 1.0) -> np.ndarray:
    """A copy of a GT face with changed sharpness, for quality-augmented targets.

    ``img`` uint8 RGB (H, W, 3). ``level < 0``: isotropic Gaussian blur of std ``-level * scale`` px
    (a lower-quality copy); ``level > 0``: unsharp mask of amount ``level`` and radius (std)
    ``scale`` px (a crisper copy); 0: an unchanged copy. ``scale`` is the image size over the
    training resolution, so one level means the same change at any size. Deterministic, so the score
    measured once for (face, level) by ``scripts/default_model/score_variants.py`` holds every epoch.
    """
    _check_image(img)
    if level < 0:
        return cv2.GaussianBlur(img, (0, 0), sigmaX=-level * scale, borderType=cv2.BORDER_REFLECT_101)
    if level > 0:
        f = img.astype(np.float32)
        soft = cv2.GaussianBlur(f, (0, 0), sigmaX=scale, borderType=cv2.BORDER_REFLECT_101)
        return np.clip(f + level * (f - soft), 0, 255).round().astype(np.uint8)
    return img.copy()


def _check_image(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        raise ValueError(f"expected a uint8 RGB array of shape (H, W, 3), got {dtype} {shape}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"image too small to degrade: {img.shape}")
