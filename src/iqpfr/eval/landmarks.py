"""Landmark distance (LMD) between a restored face and its ground truth.

Protocol: dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks`` from
``face_recognition_models``, iBUG 300-W layout) is run on both images inside the same face box (the
GT's, see :mod:`iqpfr.eval.dlib_models`). LMD is the mean Euclidean distance over the 68 points,
expressed in pixels of a 512-pixel-wide image (distances are multiplied by ``512 / GT width``), so
numbers compare across resolutions and with papers that evaluate 512x512 aligned faces. Lower is
better; 0 for identical images.
"""

from __future__ import annotations

import numpy as np

from iqpfr.eval import dlib_models

REFERENCE_WIDTH = 512


def face_landmarks(img: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(68, 2) landmark coordinates (x, y) in pixels of a uint8 RGB face."""
    if box is None:
        box, _ = dlib_models.face_box(img)
    return dlib_models.landmarks(img, box, "landmarks68")


def landmark_distance(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean 68-point landmark distance in 512-px units (see the module docstring)."""
    if pred.shape[:2] != gt.shape[:2]:
        raise ValueError(f"image sizes differ: {pred.shape[1]}x{pred.shape[0]} vs {gt.shape[1]}x{gt.shape[0]}")
    box, _ = dlib_models.face_box(gt)
    dist = np.linalg.norm(face_landmarks(pred, box) - face_landmarks(gt, box), axis=1)
    return float(dist.mean() * REFERENCE_WIDTH / gt.shape[1])
