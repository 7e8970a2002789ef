"""The per-photo face pipeline around a restoration network: find -> align/crop -> (network) -> paste.

State for one photo lives in the values these functions return (``FaceRecord`` lists), never in a
helper object that must be reset between photos.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from iqpfr.face.align import (
    affine_scale,
    alignment_affine,
    invert_affine,
    template_for,
    transform_points,
    warp_face,
)
from iqpfr.face.color import apply_tone, color_fix, monochrome_tone, to_gray3
from iqpfr.face.detect import DetectedFace, FaceDetector
from iqpfr.face.paste import inverse_affine, paste_face, soft_face_mask
from iqpfr.io import LoadedImage


@dataclass
class FaceFilter:
    """Which detected faces to restore.

    only_center: keep the face nearest the image centre; largest: keep the largest face;
    min_size: skip faces whose box is smaller than this many input pixels (shorter side);
    max_faces: keep at most this many (largest first), None for all;
    index: keep only these positions in the left-to-right order of detected faces, None for all.
    """

    only_center: bool = False
    largest: bool = False
    min_size: float = 0.0
    max_faces: int | None = None
    index: tuple[int, ...] | None = None

    def select(self, faces: list[DetectedFace], image_size: tuple[int, int]) -> tuple[list[DetectedFace], list[str]]:
        """The kept faces (left-to-right order preserved) and notes about dropped ones."""
        notes = []
        if self.index is not None:
            faces = [f for i, f in enumerate(faces) if i in set(self.index)]
        kept = [f for f in faces if min(f.width, f.height) >= self.min_size]
        if len(kept) < len(faces):
            notes.append(f"{len(faces) - len(kept)} face(s) smaller than {self.min_size:g} px skipped")
        if kept and self.largest:
            kept = [max(kept, key=lambda f: f.width * f.height)]
        if kept and self.only_center:
            cx, cy = image_size[0] / 2.0, image_size[1] / 2.0
            kept = [min(kept, key=lambda f: ((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2)]
        if self.max_faces is not None and len(kept) > self.max_faces:
            by_size = sorted(kept, key=lambda f: -f.width * f.height)[: self.max_faces]
            kept = [f for f in kept if any(f is k for k in by_size)]
            notes.append(f"only the {self.max_faces} largest face(s) restored")
        return kept, notes


@dataclass
class FaceRecord:
    """One face of a photo.

    box (x0, y0, x1, y1), landmarks (5, 2) and landmarks68 (68, 2) | None: input-image pixels.
    affine: (2, 3) input image -> crop. crop / restored: (S, S, 3) float32 RGB in [0, 1].
    score: detector confidence. timings: seconds per stage.
    fidelity: the w this face is restored with. input_niqe / strength / generative: with
    ``fidelity="auto"``, the input face's NIQE, the share of the restoration used, and the share of
    the restoration that is the network's (the rest: the super-resolution fidelity path); see
    ``iqpfr.face.adaptive``. 1 otherwise.
    """

    index: int
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    affine: np.ndarray
    crop: np.ndarray
    landmarks68: np.ndarray | None = None
    restored: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    fidelity: float | None = None
    input_niqe: float | None = None
    strength: float = 1.0
    generative: float = 1.0

    def to_dict(self) -> dict:
        """JSON-friendly summary (no pixel data)."""
        summary = {
            "index": self.index,
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": np.round(self.landmarks, 2).tolist(),
            "affine": np.round(self.affine, 6).tolist(),
            "timings": {k: round(v, 5) for k, v in self.timings.items()},
        }
        if self.fidelity is not None:
            summary["fidelity"] = round(float(self.fidelity), 4)
        if self.input_niqe is not None:
            summary["input_niqe"] = round(float(self.input_niqe), 3)
            summary["strength"] = round(float(self.strength), 4)
            summary["generative"] = round(float(self.generative), 4)
        return summary


def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]."""
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    return pixels.astype(np.float32) / top


def find_faces(
    image: LoadedImage, detector: FaceDetector, face_filter: FaceFilter | None = None
) -> tuple[list[DetectedFace], list[str]]:
    """Detect and filter the faces of ``image``."""
    faces = detector.detect(image.rgb8())
    return (face_filter or FaceFilter()).select(faces, image.size)


def crop_faces(image: LoadedImage, faces: list[DetectedFace], size: int) -> list[FaceRecord]:
    """Align each face to the FFHQ template at ``size`` and cut its crop."""
    records = []
    for index, face in enumerate(faces):
        start = time.perf_counter()
        affine = alignment_affine(face.landmarks, size)
        crop = to_float(warp_face(image.pixels, affine, size, border="reflect"))
        record = FaceRecord(index, face.box, face.score, face.landmarks, affine, crop, face.landmarks68)
        record.timings["align"] = time.perf_counter() - start
        records.append(record)
    return records


def aligned_face_record(image: LoadedImage, size: int) -> FaceRecord:
    """Treat the whole (already aligned) image as one face, resized to ``size``."""
    import cv2

    width, height = image.size
    sx, sy = size / width, size / height
    affine = np.array([[sx, 0.0, 0.5 * (sx - 1)], [0.0, sy, 0.5 * (sy - 1)]])
    interpolation = cv2.INTER_AREA if size < min(width, height) else cv2.INTER_CUBIC
    crop = np.clip(to_float(cv2.resize(image.pixels, (size, size), interpolation=interpolation)), 0, 1)
    landmarks = transform_points(template_for(size), invert_affine(affine))
    box = np.array([0.0, 0.0, width, height])
    return FaceRecord(0, box, 1.0, landmarks, affine, crop)


def upscale_image(image: LoadedImage, upscale: float) -> LoadedImage:
    """Plain resize of the whole photo (and its alpha) by ``upscale`` (bicubic up, area down)."""
    import cv2

    if upscale == 1:
        return image.with_pixels(image.pixels.copy(), None if image.alpha is None else image.alpha.copy())
    width, height = image.size
    size = (max(1, round(width * upscale)), max(1, round(height * upscale)))
    interpolation = cv2.INTER_CUBIC if upscale > 1 else cv2.INTER_AREA
    pixels = cv2.resize(image.pixels, size, interpolation=interpolation)
    alpha = None if image.alpha is None else cv2.resize(image.alpha, size, interpolation=interpolation)
    return image.with_pixels(pixels, alpha)


# a restored face is up-sampled (``face_upsampler``) only when it would be stretched by more than this
FACE_UPSAMPLE_MIN_STRETCH = 1.25


def face_upsample_factor(size: int, affine: np.ndarray, upscale: float, network_scale: int) -> int:
    """How much to up-sample an S-px restored face before pasting it: its footprint on the output
    canvas over S, rounded up, at most the network's scale; 1 when it is not stretched much."""
    stretch = upscale / max(affine_scale(affine), 1e-12)  # output pixels per crop pixel
    if stretch < FACE_UPSAMPLE_MIN_STRETCH:
        return 1
    return int(min(network_scale, np.ceil(stretch)))


def scale_crop_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """The image -> crop affine for the same crop sampled ``factor`` times finer (pixel-centre convention)."""
    scaled = np.asarray(affine, np.float64) * factor
    scaled[:, 2] += 0.5 * (factor - 1)
    return scaled


def paste_faces(
    image: LoadedImage,
    records: list[FaceRecord],
    *,
    upscale: float = 1.0,
    color: str = "none",
    grayscale: str = "auto",
    aligned: bool = False,
    background: LoadedImage | None = None,
) -> LoadedImage:
    """The output photo: ``image`` up-scaled, with every restored face blended in.

    color: colour fix of each restored face towards its input crop (``none|adain|wavelet``).
    grayscale: ``auto`` gives restored faces the photo's tone on monochrome photos (gray stays gray, sepia
        stays sepia: no colourisation); ``on`` turns them gray, ``off`` keeps the network's colours.
    aligned: the photo is one aligned face: the restored face replaces it (no mask).
    background: the up-scaled photo to paste into (e.g. from a super-resolution network); default a
        bicubic resize of ``image`` by ``upscale``. Its size must be ``image``'s times ``upscale``.
    A restored face may be k times the crop's side (up-sampled, k an integer): it is pasted through
    the same alignment, sampled k times finer. ``record.strength`` < 1 keeps that share of the input.
    """
    import cv2

    gray = grayscale == "on" or (grayscale == "auto" and image.gray)
    # a monochrome photo (gray, or one tint such as sepia) keeps its tone: the network would colourise it
    tone = monochrome_tone(image.pixels) if grayscale == "auto" and not gray else None
    for record in records:
        if record.restored is None:
            continue
        face = color_fix(record.restored, record.crop, color)
        record.restored = to_gray3(face) if gray else apply_tone(face, tone) if tone is not None else face
    width, height = image.size
    size = (max(1, round(width * upscale)), max(1, round(height * upscale)))
    if background is not None and background.size != size:
        raise ValueError(f"background is {background.size[0]}x{background.size[1]}, expected {size[0]}x{size[1]}")
    out = upscale_image(image, upscale) if background is None else background
    if aligned:
        face = records[0].restored if records and records[0].restored is not None else None
        if face is not None:
            interpolation = cv2.INTER_AREA if size[0] < face.shape[1] else cv2.INTER_CUBIC
            resized = np.clip(cv2.resize(face, size, interpolation=interpolation), 0.0, 1.0)
            strength = float(records[0].strength)
            if strength < 1.0:  # quality-adaptive: keep this share of the input (at the output size)
                resized = strength * resized + (1.0 - strength) * (out.pixels.astype(np.float32) / out.max_value)
            out.pixels = np.round(resized * out.max_value).astype(out.pixels.dtype)
        return out
    for record in records:
        if record.restored is None or record.strength <= 0:
            continue  # a clean face (quality-adaptive strength 0) keeps the photo's own pixels
        start = time.perf_counter()
        face = record.restored
        factor = max(1, int(round(face.shape[0] / record.crop.shape[0])))
        affine = scale_crop_affine(record.affine, factor) if factor > 1 else record.affine
        points68 = None if record.landmarks68 is None else transform_points(record.landmarks68, affine)
        mask = soft_face_mask(face.shape[0], points68) * np.float32(record.strength)
        paste_face(out.pixels, face, inverse_affine(affine, upscale), mask)
        record.timings["paste"] = time.perf_counter() - start
    return out
