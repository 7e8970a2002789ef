"""Paste restored faces back: a soft face mask and an inverse-affine blend with no visible seam.

No face-parsing network is available offline, so the mask is the 68-point landmark polygon
(jaw line and eyebrows, raised to cover the forehead), feathered with a Gaussian, and multiplied by
a window that fades to zero before the crop border: the blend therefore never shows the square
edge of the crop (GFPGAN#259, #590) and, unlike parsing masks, it has no hard cut either.
"""

from __future__ import annotations

import numpy as np

from iqpfr.face.align import MEAN_LANDMARKS_68_512, invert_affine, template_for, warp_affine

# forehead height above the brows, as a fraction of the brow-to-chin distance
FOREHEAD_FRACTION = 0.45
# feather (Gaussian sigma) and border fade, as fractions of the crop size
FEATHER_FRACTION = 0.03
BORDER_FADE_FRACTION = 0.08


def face_polygon(landmarks68: np.ndarray) -> np.ndarray:
    """(K, 2) convex polygon around jaw, brows and forehead from (68, 2) landmarks (crop coordinates)."""
    points = np.asarray(landmarks68, np.float64)
    jaw, brows = points[0:17], points[17:27]
    chin = points[8]
    brow_centre = brows.mean(0)
    up = brow_centre - chin
    height = float(np.linalg.norm(up))
    if height < 1e-6:
        raise ValueError("degenerate landmarks: chin and brows coincide")
    forehead = brows + up / height * FOREHEAD_FRACTION * height
    # the jaw ends at the ears; carry them up to the forehead so the temples are covered
    temples = np.stack([jaw[0] + up * FOREHEAD_FRACTION * 0.6, jaw[16] + up * FOREHEAD_FRACTION * 0.6])
    return np.concatenate([jaw, brows, forehead, temples])


def soft_face_mask(size: int, landmarks68: np.ndarray | None = None) -> np.ndarray:
    """(size, size) float32 mask in [0, 1]: 1 on the face, a smooth fall-off, 0 at the crop border.

    landmarks68: (68, 2) points in crop coordinates; None uses the mean FFHQ face (5-point backends).
    """
    import cv2

    if landmarks68 is None:
        landmarks68 = template_for(size, MEAN_LANDMARKS_68_512)
    polygon = face_polygon(landmarks68)
    hull = cv2.convexHull(np.round(polygon * 16).astype(np.int32))
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0, lineType=cv2.LINE_AA, shift=4)
    sigma = max(1.0, FEATHER_FRACTION * size)
    # erode first so the feathered edge stays on the face outline instead of spilling past it
    erode = max(1, int(round(sigma)))
    mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    return mask * border_window(size)


def border_window(size: int, fade: float = BORDER_FADE_FRACTION) -> np.ndarray:
    """(size, size) separable window: 0 on the outermost pixels, smooth rise to 1 within ``fade*size``."""
    ramp = max(2.0, fade * size)
    distance = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float64)
    t = np.clip((distance - 0.5) / ramp, 0.0, 1.0)
    profile = t * t * (3.0 - 2.0 * t)  # smoothstep: zero slope at both ends
    return np.outer(profile, profile).astype(np.float32)


def inverse_affine(affine: np.ndarray, upscale: float = 1.0) -> np.ndarray:
    """Crop -> output-image affine for a (2, 3) image -> crop ``affine``, with the output up-scaled.

    The up-scaled canvas follows OpenCV's pixel-centre resize convention: x' = s x + (s - 1) / 2.
    """
    inverse = invert_affine(affine)
    scaled = inverse * upscale
    scaled[:, 2] += 0.5 * (upscale - 1.0)
    return scaled


def paste_face(
    canvas: np.ndarray, face: np.ndarray, crop_to_canvas: np.ndarray, mask: np.ndarray
) -> tuple[int, int, int, int] | None:
    """Blend ``face`` into ``canvas`` in place; returns the touched (x0, y0, x1, y1) box or None.

    canvas: (H, W, C) uint8/uint16/float32 (float in [0, 1]).
    face: (S, S, C) float32 in [0, 1] (same channel count as canvas).
    crop_to_canvas: (2, 3) affine from crop to canvas pixels (see :func:`inverse_affine`).
    mask: (S, S) float32 in [0, 1] (see :func:`soft_face_mask`).
    """
    size = face.shape[0]
    height, width = canvas.shape[:2]
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
    mapped = corners @ crop_to_canvas[:, :2].T + crop_to_canvas[:, 2]
    x0, y0 = np.floor(mapped.min(0)).astype(int) - 1
    x1, y1 = np.ceil(mapped.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    local = crop_to_canvas.copy()
    local[:, 2] -= (x0, y0)
    out_size = (x1 - x0, y1 - y0)
    warped_face = warp_affine(face, local, out_size, border="replicate")
    warped_mask = warp_affine(mask, local, out_size, border="constant")
    if warped_face.ndim == 2:
        warped_face = warped_face[:, :, None]
    region = canvas[y0:y1, x0:x1]
    top = _max_value(canvas.dtype)
    region_f = region.astype(np.float32) / top
    alpha = warped_mask[:, :, None]
    blended = alpha * warped_face + (1.0 - alpha) * region_f
    if np.issubdtype(canvas.dtype, np.floating):
        canvas[y0:y1, x0:x1] = blended
    else:
        canvas[y0:y1, x0:x1] = np.clip(np.round(blended * top), 0, top).astype(canvas.dtype)
    return int(x0), int(y0), int(x1), int(y1)


def _max_value(dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0
