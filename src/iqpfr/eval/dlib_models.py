"""dlib face models shipped by the ``face_recognition_models`` package (offline, no download).

Face box protocol shared by IDS and LMD: dlib's HOG frontal-face detector on the image (without
up-sampling, then with one up-sampling if nothing was found), the largest detection kept; when nothing is found, a fixed box covering the central
``FALLBACK_BOX`` fraction of the image, which is where the face sits in FFHQ-aligned crops. In a
prediction/GT pair the box is found on the GT and used for both images, so a blurry or badly
restored prediction is measured at the same place instead of failing detection.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

# left, top, right, bottom as fractions of the width/height: the mean HOG detection on 20
# FFHQ-aligned faces (gpen_ffhq10 + codeformer_cropped_faces; std 0.02-0.045 per side)
FALLBACK_BOX = (0.20, 0.28, 0.79, 0.87)
MODEL_FILES = {
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
}


class DlibUnavailableError(RuntimeError):
    """dlib or face_recognition_models is not installed (``pip install 'iqpfr[face]'``)."""


def model_path(kind: str) -> Path:
    """Path of a model file inside ``face_recognition_models`` (found without importing it:
    its ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DlibUnavailableError("face_recognition_models is not installed (pip install 'iqpfr[face]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILES[kind]
    if not path.is_file():
        raise DlibUnavailableError(f"{path}: dlib model file missing from face_recognition_models")
    return path


def _dlib():
    try:
        import dlib
    except ImportError as exc:
        raise DlibUnavailableError("dlib is not installed (pip install 'iqpfr[face]')") from exc
    return dlib


@functools.lru_cache(maxsize=1)
def detector():
    return _dlib().get_frontal_face_detector()


@functools.cache
def shape_predictor(kind: str):
    return _dlib().shape_predictor(str(model_path(kind)))


@functools.lru_cache(maxsize=1)
def recognition_model():
    return _dlib().face_recognition_model_v1(str(model_path("recognition")))


def face_box(img: np.ndarray) -> tuple[tuple[int, int, int, int], bool]:
    """((left, top, right, bottom), detected) for a uint8 RGB image; see the module docstring."""
    img = np.ascontiguousarray(img)
    for upsample in (0, 1):  # 0 finds faces >= ~80 px quickly; 1 (4x slower) finds smaller ones
        dets = detector()(img, upsample)
        if len(dets):
            best = max(dets, key=lambda r: r.width() * r.height())
            return (best.left(), best.top(), best.right(), best.bottom()), True
    h, w = img.shape[:2]
    fl, ft, fr, fb = FALLBACK_BOX
    return (int(fl * w), int(ft * h), int(fr * w), int(fb * h)), False


def rectangle(box: tuple[int, int, int, int]):
    return _dlib().rectangle(*(int(v) for v in box))


def landmarks(img: np.ndarray, box: tuple[int, int, int, int], kind: str = "landmarks68") -> np.ndarray:
    """(N, 2) float landmark coordinates (x, y) in pixels predicted inside ``box``."""
    shape = shape_predictor(kind)(np.ascontiguousarray(img), rectangle(box))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
