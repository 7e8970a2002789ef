"""The evaluation protocol: every metric ``iqpfr eval`` knows, what it measures and how.

Metric kinds: ``fr`` (full reference, per image, needs ``--gt``), ``nr`` (no reference, per image,
any :class:`iqpfr.quality.base.QualityScorer` by name) and ``set`` (one number for the whole
prediction set against a reference set: FID, KID). The ``protocol`` strings are copied into every
summary so a results table always says how it was made.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "fr", "nr" or "set"
    higher_better: bool
    columns: tuple[str, ...]
    protocol: str


_FR_SPECS = (
    MetricSpec("psnr", "fr", True, ("psnr",),
               "PSNR in dB, peak 255, one MSE over all 8-bit R, G, B values; no border crop "
               "(--crop-border N crops N px per side); inf for identical images."),
    MetricSpec("psnr_y", "fr", True, ("psnr_y",),
               "PSNR in dB on the float BT.601 YCbCr Y channel 16 + (65.481R + 128.553G + 24.966B)/255 "
               "(BasicSR test_y_channel convention)."),
    MetricSpec("ssim", "fr", True, ("ssim",),
               "SSIM (Wang et al. 2004) on 8-bit luma round(0.299R + 0.587G + 0.114B); 11x11 Gaussian "
               "window sigma 1.5, K1 0.01, K2 0.03, L 255, mean over the valid region (no padding), "
               "no down-sampling, no extra border crop (equivalent to skimage structural_similarity(gaussian_weights=True, "
               "sigma=1.5, use_sample_covariance=False, data_range=255) on the 8-bit luma images); "
               "reproduces the calibration reference values (pyiqa ResultsCalibra) to 4 decimals."),
    MetricSpec("ssim_y", "fr", True, ("ssim_y",),
               "SSIM as 'ssim' but on the float BT.601 YCbCr Y channel (BasicSR test_y_channel)."),
    MetricSpec("ssim_rgb", "fr", True, ("ssim_rgb",),
               "SSIM as 'ssim' computed on each of R, G, B and averaged (BasicSR default)."),
    MetricSpec("lpips", "fr", False, ("lpips",),
               "LPIPS v0.1 with the VGG-16 backbone (zoo weights vgg16-imagenet + lpips-vgg-v0.1, "
               "sha256-checked), full image, inputs in [-1, 1]."),
    MetricSpec("ids", "fr", False, ("ids", "ids_l2"),
               "Identity distance: dlib 128-d ResNet face embeddings (face_recognition_models, offline) "
               "of prediction and GT; face box from dlib's HOG detector on the GT (central fixed box if "
               "none), 5-point landmarks per image, dlib's 150x150 aligned chip with padding 0.25. "
               "ids = angle between embeddings in degrees (CodeFormer's 'Deg.'); ids_l2 = Euclidean "
               "distance (dlib: < 0.6 same person). With --ids-model arcface: ArcFace ResNet-18 (GFPGAN/CodeFormer "
               "arcface_resnet18 layout) on the whole aligned face as 128x128 BT.601 gray in [-1, 1]; angle in degrees."),
    MetricSpec("lmd", "fr", False, ("lmd",),
               "Landmark distance: dlib 68-point landmarks of prediction and GT inside the GT's face box; "
               "mean point distance in pixels of a 512-px-wide image (x 512 / GT width)."),
)

_SET_SPECS = (
    MetricSpec("fid", "set", False, ("fid",),
               "FID on 2048-d pool features of the FID Inception-v3 (zoo weights inception-fid, "
               "pytorch-fid port of the TF 2015-12-05 graph), 299x299 bilinear resize; reference set "
               "from --fid-ref (a folder, default the GT folder, or a statistics .npz); unbiased covariances."),
    MetricSpec("kid", "set", False, ("kid", "kid_std"),
               "KID: unbiased MMD^2 with the cubic polynomial kernel on the same Inception features, "
               "mean and std over 100 random subsets of min(1000, N) images (seed 0)."),
)

FULL_REFERENCE = {spec.name: spec for spec in _FR_SPECS}
# direction of no-reference scores, learned from each scorer's ``higher_better`` when it is built;
# the classic opinion-unaware metrics are known in advance
_NR_HIGHER_BETTER: dict[str, bool] = {"niqe": False, "piqe": False, "brisque": False}


def record_direction(name: str, higher_better: bool) -> None:
    """Remember whether the no-reference metric ``name`` is higher-better (from its scorer)."""
    _NR_HIGHER_BETTER[name] = bool(higher_better)

SET_LEVEL = {spec.name: spec for spec in _SET_SPECS}


def metric_spec(name: str) -> MetricSpec:
    """The spec of ``name``; names not listed here are no-reference scorers of iqpfr.quality."""
    if name in FULL_REFERENCE:
        return FULL_REFERENCE[name]
    if name in SET_LEVEL:
        return SET_LEVEL[name]
    return MetricSpec(name, "nr", _NR_HIGHER_BETTER.get(name, True), (name,),
                      f"No-reference quality score of the prediction by iqpfr.quality.create_scorer({name!r}), "
                      "images as RGB in [0, 1] at their stored size.")


def list_metrics() -> list[str]:
    """All metric names: full-reference, set-level and the built-in no-reference scorers."""
    try:
        from iqpfr.quality.registry import list_scorers

        scorers = list_scorers()
    except ImportError:
        scorers = []
    return [*FULL_REFERENCE, *SET_LEVEL, *scorers]


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that can change metric values."""
    versions = {"python": platform.python_version()}
    for dist in ("iqpfr", "numpy", "scipy", "torch", "torchvision", "opencv-python-headless", "pillow",
                 "dlib-bin", "dlib", "face-recognition-models", "pyiqa"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions
