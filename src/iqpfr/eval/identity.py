"""Identity distance (IDS) between a restored face and its ground truth.

Default model (offline): dlib's 128-d ResNet face embedding (``dlib_face_recognition_resnet_model_v1``
from ``face_recognition_models``; 99.38% on LFW by its authors). Crop: the face box of
:mod:`iqpfr.eval.dlib_models` (found on the GT, shared by the prediction), dlib's 5-point landmarks
predicted on each image inside that box, and dlib's aligned 150x150 face chip (padding 0.25).

Reported values:

- ``ids``: the angle in degrees between the two embeddings, ``acos(cosine similarity)`` (the
  "Deg." convention of CodeFormer's tables, which use ArcFace; lower is better);
- ``ids_l2``: the Euclidean distance of the dlib embeddings (dlib's own metric: < 0.6 = same person).

``--ids-model arcface`` uses the ArcFace ResNet-18 of :mod:`iqpfr.eval.arcface` instead (whole
aligned face, 128x128 gray; zoo entry ``arcface`` or a local file).
"""

from __future__ import annotations

import math

import numpy as np

from iqpfr.eval import dlib_models


def dlib_embedding(img: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """128-d dlib face descriptor (float64) of a uint8 RGB image; box from :func:`face_box` if None."""
    if box is None:
        box, _ = dlib_models.face_box(img)
    img = np.ascontiguousarray(img)
    shape = dlib_models.shape_predictor("landmarks5")(img, dlib_models.rectangle(box))
    desc = dlib_models.recognition_model().compute_face_descriptor(img, shape, 0, 0.25)
    return np.asarray(desc, dtype=np.float64)


def angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two embedding vectors in degrees (0 = same direction)."""
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def identity_distance(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """{"ids": degrees, "ids_l2": embedding distance} of two uint8 RGB faces with dlib (GT's face box)."""
    box, _ = dlib_models.face_box(gt)
    e_pred, e_gt = dlib_embedding(pred, box), dlib_embedding(gt, box)
    return {"ids": angle_degrees(e_pred, e_gt), "ids_l2": float(np.linalg.norm(e_pred - e_gt))}
