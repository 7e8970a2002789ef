"""Alignment to the FFHQ 5-point template: similarity estimation, warping and point transforms.

Landmark order everywhere: image-left eye centre, image-right eye centre, nose tip,
image-left mouth corner, image-right mouth corner, as (x, y) pixel coordinates.
Affines are (2, 3) float64 matrices mapping image -> crop coordinates (OpenCV convention).
"""

from __future__ import annotations

import numpy as np

# FFHQ-aligned 512x512 faces (the CodeFormer/facexlib template): eyes, nose tip, mouth corners
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19366],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

# Mean dlib 68-point landmarks on FFHQ-aligned faces, in 512x512 coordinates. Measured by us with
# dlib's 68-point predictor on 395 faces of ffhq_train256 (x2); used for the paste mask when a
# backend gives only 5 points, and to place the forehead.
MEAN_LANDMARKS_68_512 = np.array(
    [
        [113.1, 246.6], [113.7, 284.1], [117.4, 321.6], [124.5, 358.5], [138.7, 392.8], [161.2, 422.7],
        [189.2, 447.7], [220.2, 467.9], [255.6, 474.1], [291.0, 468.2], [322.9, 448.5], [352.0, 424.1],
        [375.4, 394.4], [390.3, 359.9], [397.9, 322.6], [401.7, 284.8], [402.9, 246.8], [140.2, 218.3],
        [157.5, 201.7], [182.4, 196.4], [208.4, 199.6], [232.3, 209.5], [277.6, 208.9], [302.4, 199.1],
        [328.8, 196.0], [354.1, 201.8], [371.9, 218.4], [255.0, 239.0], [254.8, 263.0], [254.6, 286.7],
        [254.4, 311.2], [225.2, 328.3], [239.4, 333.6], [254.6, 338.1], [270.0, 333.7], [284.3, 328.7],
        [168.6, 243.3], [184.2, 234.5], [202.4, 234.9], [218.5, 246.4], [201.5, 249.1], [183.4, 249.0],
        [292.4, 246.5], [308.9, 234.7], [327.1, 234.7], [342.6, 243.4], [327.9, 249.0], [309.9, 249.2],
        [197.6, 372.2], [218.7, 364.0], [240.0, 360.2], [254.7, 363.7], [270.2, 360.3], [291.9, 364.4],
        [313.8, 372.3], [292.5, 393.0], [271.3, 402.2], [254.6, 404.0], [238.7, 402.2], [217.9, 393.0],
        [205.9, 373.4], [239.8, 371.7], [254.7, 373.5], [270.3, 371.8], [305.3, 373.4], [270.5, 384.6],
        [254.6, 386.4], [239.5, 384.5],
    ],
    dtype=np.float64,
)

# Mean positions of dlib's own 5-point model (outer/inner eye corners, nose base) on the same faces,
# so a 5-point dlib fit can be aligned to FFHQ exactly like the full template.
DLIB5_TEMPLATE_512 = np.array(
    [[342.99, 243.72], [292.94, 245.75], [168.34, 243.09], [218.19, 245.56], [254.82, 338.56]],
    dtype=np.float64,
)


def template_for(size: int, template_512: np.ndarray = FFHQ_TEMPLATE_512) -> np.ndarray:
    """A 512-pixel template scaled to a ``size`` x ``size`` crop (pixel-centre convention)."""
    scale = size / 512.0
    return (template_512 + 0.5) * scale - 0.5


def landmarks5_from_68(points68: np.ndarray) -> np.ndarray:
    """(68, 2) dlib/iBUG landmarks -> (5, 2) FFHQ-order points (eye centres, nose tip, mouth corners)."""
    p = np.asarray(points68, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

    src, dst: (N, 2) points, N >= 2. Returns a (2, 3) affine. Closed form (Umeyama 1991) without
    reflection, so it is deterministic, unlike RANSAC/LMEDS estimators.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("degenerate landmarks (all points coincide)")
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine."""
    full = np.vstack([np.asarray(affine, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) affine applying ``inner`` first, then ``outer``."""
    a = np.vstack([outer, [0.0, 0.0, 1.0]])
    b = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (N, 2) points."""
    points = np.asarray(points, np.float64)
    return points @ np.asarray(affine, np.float64)[:, :2].T + np.asarray(affine, np.float64)[:, 2]


def alignment_affine(landmarks5: np.ndarray, size: int) -> np.ndarray:
    """Affine taking an image with these 5 FFHQ-order landmarks to a ``size`` crop on the template."""
    return estimate_similarity(landmarks5, template_for(size))


def affine_scale(affine: np.ndarray) -> float:
    """Uniform scale factor of a similarity affine."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(affine)[:, :2]))))


def warp_face(image: np.ndarray, affine: np.ndarray, size: int, *, border: str = "reflect") -> np.ndarray:
    """Crop an aligned ``size`` x ``size`` face from ``image`` (H, W[, C], uint8/uint16/float32).

    border: "reflect" (FFHQ-like padding for faces near the edge), "replicate" or "constant" (zeros).
    """
    return warp_affine(image, affine, (size, size), border=border)


def warp_affine(
    image: np.ndarray, affine: np.ndarray, out_size: tuple[int, int], *, border: str = "constant"
) -> np.ndarray:
    """``cv2.warpAffine`` to ``out_size`` = (width, height), bilinear, with an anti-alias pre-filter.

    Down-scaling by more than 2x first shrinks the source with an area filter, so small outputs
    (a 512 face pasted into a 60-pixel box, a crop from a huge photo) do not alias.
    """
    import cv2

    affine = np.asarray(affine, np.float64)
    scale = affine_scale(affine)
    if scale < 0.5:
        pre = scale * 2.0
        height, width = image.shape[:2]
        new_size = (max(2, round(width * pre)), max(2, round(height * pre)))
        image = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
        fx, fy = new_size[0] / width, new_size[1] / height
        resize = np.array([[fx, 0.0, 0.5 * (fx - 1)], [0.0, fy, 0.5 * (fy - 1)]])
        affine = compose_affine(affine, invert_affine(resize))
    modes = {"reflect": cv2.BORDER_REFLECT101, "replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
    return cv2.warpAffine(image, affine, out_size, flags=cv2.INTER_LINEAR, borderMode=modes[border])
