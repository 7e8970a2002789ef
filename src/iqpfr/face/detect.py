"""Face detection and landmarks behind one interface, with offline (dlib) and RetinaFace backends.

Every backend returns :class:`DetectedFace` records in image pixel coordinates with 5 FFHQ-order
landmarks (see ``iqpfr.face.align``); the dlib backend adds the 68 iBUG points used for the paste
mask. dlib and its models (``dlib-bin`` + ``face-recognition-models``, extra ``[face]``) run offline
and are imported only when a detector is built.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqpfr.face.align import (
    DLIB5_TEMPLATE_512,
    FFHQ_TEMPLATE_512,
    estimate_similarity,
    invert_affine,
    landmarks5_from_68,
    template_for,
    transform_points,
)

DETECTORS = ("dlib-hog", "dlib-cnn", "retinaface")


class DetectorUnavailable(RuntimeError):
    """A detector backend that cannot run here (missing package or weights); the message says why."""


@dataclass
class DetectedFace:
    """One face. box: (x0, y0, x1, y1) float pixels; landmarks: (5, 2) FFHQ order;
    landmarks68: (68, 2) iBUG order or None; score: detector confidence (backend-specific scale)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    landmarks68: np.ndarray | None = None

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


class FaceDetector(ABC):
    """Interface: ``detect(rgb)`` with rgb an (H, W, 3) uint8 RGB array -> faces, left to right."""

    name: str = "detector"

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces in ``rgb`` ((H, W, 3) uint8 RGB), sorted left to right."""


# ------------------------------------------------------------------------------------------ dlib


def dlib_model_path(filename: str) -> Path:
    """Path of a model file shipped by the ``face-recognition-models`` package (found without importing
    it: its ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailable(
            "the dlib detector needs the 'face-recognition-models' package: pip install 'iqpfr[face]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise DetectorUnavailable(f"{path}: missing from face-recognition-models (reinstall it)")
    return path


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise DetectorUnavailable("the dlib detector needs dlib: pip install 'iqpfr[face]' (dlib-bin)") from None
    return dlib


class DlibDetector(FaceDetector):
    """dlib HOG (``kind="hog"``, fast) or CNN/MMOD (``kind="cnn"``, slower, more robust) detector
    with dlib's 68-point (default) or 5-point shape predictor.

    upsample: pyramid up-sampling steps (each roughly halves the smallest findable face, ~80 px at 0);
    None: 1 for HOG, for the CNN 1 on photos up to 700 px and 0 above.
    max_side: the detection pass runs on a copy shrunk to this long side (landmarks use full resolution).
    """

    def __init__(
        self,
        kind: str = "hog",
        *,
        landmarks: int = 68,
        upsample: int | None = None,
        max_side: int | None = None,
        threshold: float = 0.0,
    ):
        if kind not in ("hog", "cnn"):
            raise ValueError(f"kind must be 'hog' or 'cnn', got {kind!r}")
        if landmarks not in (5, 68):
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks!r}")
        dlib = _import_dlib()
        self.kind = kind
        self.name = f"dlib-{kind}"
        self.landmark_count = landmarks
        self.upsample = upsample
        # the CNN is ~50x slower than HOG on CPU: it sees at most a 1024-pixel copy
        self.max_side = (2000 if kind == "hog" else 1024) if max_side is None else max_side
        self.threshold = threshold
        if kind == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))
        model = "shape_predictor_68_face_landmarks.dat" if landmarks == 68 else "shape_predictor_5_face_landmarks.dat"
        self._predictor = _shape_predictor(str(dlib_model_path(model)))
        self._rectangle = dlib.rectangle
        # dlib objects are not documented as thread-safe: one detection at a time per detector
        self._lock = threading.Lock()

    def _detection_scale(self, height: int, width: int) -> float:
        long_side = max(height, width)
        return self.max_side / long_side if long_side > self.max_side else 1.0

    def _upsample_for(self, height: int, width: int) -> int:
        if self.upsample is not None:
            return self.upsample
        # HOG finds faces from ~80 px, ~40 px after one up-sampling; the CNN is costly, so it
        # up-samples only small photos (where faces are small)
        return 1 if self.kind == "hog" or max(height, width) <= 700 else 0

    def _boxes(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        import cv2

        scale = self._detection_scale(*rgb.shape[:2])
        small = rgb
        if scale != 1.0:
            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        small = np.ascontiguousarray(small)
        upsample = self._upsample_for(*small.shape[:2])
        with self._lock:
            if self.kind == "hog":
                rects, scores, _ = self._detector.run(small, upsample, self.threshold)
                found = [(r, float(s)) for r, s in zip(rects, scores)]
            else:
                found = [(d.rect, float(d.confidence)) for d in self._detector(small, upsample)]
                found = [(r, s) for r, s in found if s >= self.threshold]
        boxes = []
        for rect, score in found:
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float64) / scale
            boxes.append((box, score))
        return boxes

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        rgb = np.ascontiguousarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        faces = []
        for box, score in self._boxes(rgb):
            rect = self._rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
            shape = self._predictor(rgb, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
            if self.landmark_count == 68:
                faces.append(DetectedFace(box, score, landmarks5_from_68(points), points))
            else:
                faces.append(DetectedFace(box, score, _ffhq5_from_dlib5(points)))
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))

    def refine(self, rgb: np.ndarray, box: np.ndarray, score: float = 0.0) -> DetectedFace:
        """Landmarks of the face in ``box`` (x0, y0, x1, y1) of ``rgb`` ((H, W, 3) uint8) by the
        shape predictor alone, without the detection pass (video tracking between detections)."""
        rgb = np.ascontiguousarray(rgb)
        rect = self._rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
        with self._lock:
            shape = self._predictor(rgb, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        box = np.asarray(box, np.float64)
        if self.landmark_count == 68:
            return DetectedFace(box, score, landmarks5_from_68(points), points)
        return DetectedFace(box, score, _ffhq5_from_dlib5(points))


@functools.lru_cache(maxsize=2)
def _shape_predictor(path: str):
    """dlib shape predictors are read-only after loading: one copy per process (the 68-point file is 100 MB)."""
    return _import_dlib().shape_predictor(path)


def _ffhq5_from_dlib5(points: np.ndarray) -> np.ndarray:
    """FFHQ-order 5 points from dlib's 5-point model (eye corners + nose base), through the mean face."""
    to_template = estimate_similarity(points, DLIB5_TEMPLATE_512)
    return transform_points(FFHQ_TEMPLATE_512, invert_affine(to_template))


# ------------------------------------------------------------------------------------- RetinaFace


RETINAFACE_ZOO_NAME = "retinaface-resnet50"


class RetinaFaceDetector(FaceDetector):
    """RetinaFace (ResNet-50) detector; weights from the model zoo (``iqpfr.weights``, sha256-checked)
    or a local ``.pth``/``.safetensors`` file. Raises DetectorUnavailable when the weights cannot be had.

    The photo is resized so its long side lies in [min_side, max_side] before detection.
    """

    name = "retinaface"

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        device: str = "cpu",
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        min_side: int = 640,
        max_side: int = 1280,
        offline: bool = False,
    ):
        from iqpfr.face.retinaface import load_retinaface

        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.min_side, self.max_side = min_side, max_side
        self.weights = self._resolve(weights, offline)
        try:
            self._net = load_retinaface(self.weights, device=device)
        except Exception as exc:  # a wrong or corrupt file: one line naming it
            raise DetectorUnavailable(f"retinaface: {self.weights}: cannot load ({type(exc).__name__}: {exc})") from None
        self._lock = threading.Lock()

    @staticmethod
    def _resolve(weights: str | Path | None, offline: bool) -> Path:
        if weights is not None and Path(weights).is_file():
            return Path(weights)
        from iqpfr.weights import resolve_weights

        try:
            return Path(resolve_weights(str(weights or RETINAFACE_ZOO_NAME), offline=offline))
        except Exception as exc:  # any zoo failure (offline, unknown name, hash mismatch) is one line
            raise DetectorUnavailable(f"retinaface: weights unavailable ({exc})") from None

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        import cv2

        from iqpfr.face.retinaface import detect_faces

        long_side = max(rgb.shape[:2])
        scale = min(max(1.0, self.min_side / long_side), self.max_side / long_side)
        small = rgb
        if scale != 1.0:
            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        with self._lock:
            found = detect_faces(self._net, small, score_threshold=self.score_threshold,
                                 nms_threshold=self.nms_threshold)
        faces = [DetectedFace(box / scale, score, points / scale) for box, score, points in found]
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


# ---------------------------------------------------------------------------------------- factory


def create_detector(
    name: str = "dlib-hog", *, device: str = "cpu", weights: str | Path | None = None, offline: bool = False
) -> FaceDetector:
    """Build a detector by name: ``dlib-hog`` (default, offline), ``dlib-cnn`` or ``retinaface``
    (weights: a local file or the zoo entry ``retinaface-resnet50``, downloaded unless ``offline``)."""
    if name == "dlib-hog":
        return DlibDetector("hog")
    if name == "dlib-cnn":
        return DlibDetector("cnn")
    if name == "retinaface":
        return RetinaFaceDetector(weights, device=device, offline=offline)
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


def template_landmarks(size: int) -> np.ndarray:
    """The 5 template points of a ``size`` crop (landmarks of an already-aligned face)."""
    return template_for(size)
