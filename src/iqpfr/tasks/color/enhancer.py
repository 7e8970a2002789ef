"""``ColorEnhancer``: face colour enhancement of whole photos (faces by the colour model, the rest by a
colour transform fitted on the faces).

1. Every face is detected, aligned and restored by the colour model (``iqpfr-128-color``) at
   quality 0.95 and w = 0 (the authors' colour inference), with ``grayscale="off"``: a monochrome
   photo is *not* kept monochrome (the photo path's ``grayscale="auto"`` would re-tone it).
2. One 3x4 affine colour map (linear RGB, ridge toward identity) is fitted from the input face crops
   to their enhanced versions on the soft face mask (``iqpfr.tasks.color.transform``).
3. With ``whole_photo="affine"`` the map is applied to the whole photo, and the enhanced faces are
   pasted on top. The default is ``"none"`` (faces only): on 7 whole photos the map carried the
   model's warm cast to the background and doubled CIEDE2000 (README, "Face colour enhancement").

For a gray photo the fitted map is a luminance -> chroma toning (see ``transform``):
``gray_background="tone"`` applies it to the whole photo (the background gets the faces' tones, a
warm tint); ``"keep"`` leaves everything but the faces gray.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

DEFAULT_WEIGHTS = "iqpfr-128-color"
DEFAULT_QUALITY = 0.95
DEFAULT_FIDELITY = 0.0
GRAY_BACKGROUND = ("tone", "keep")
WHOLE_PHOTO = ("affine", "none")


class ColorEnhancer:
    """Face colour enhancement with a ``FaceRestorer`` (colour model) plus a whole-photo colour map."""

    def __init__(self, restorer, *, reg: float = 1e-2):
        self.restorer = restorer
        self.reg = reg

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, **kwargs: Any) -> ColorEnhancer:
        """Load the colour model (default the embedded ``iqpfr-128-color``) or any restoration weights.

        kwargs go to ``FaceRestorer.from_pretrained`` (device, detector, offline, precision, ...).
        """
        from iqpfr.restorer import FaceRestorer

        return cls(FaceRestorer.from_pretrained(name_or_path or DEFAULT_WEIGHTS, **kwargs))

    def enhance(
        self,
        image: Any,
        *,
        quality: float = DEFAULT_QUALITY,
        fidelity: float = DEFAULT_FIDELITY,
        upscale: float = 1.0,
        aligned: bool = False,
        whole_photo: str = "none",
        gray_background: str = "keep",
        face_upsample: bool = False,
        channel_order: str = "rgb",
        **restore_kwargs: Any,
    ):
        """Enhance the colours of one photo -> ``iqpfr.restorer.RestoreResult``.

        image: as ``FaceRestorer.restore`` (path, PIL, numpy, tensor). quality / fidelity: the model's
        q and w (default 0.95 / 0). whole_photo: ``none`` (only the faces change; default, it measured
        better, README "Face colour enhancement") or ``affine`` (the faces' colour map on the photo). gray_background: for a gray photo, ``keep``
        (only the faces get colour) or ``tone`` (the fitted luminance -> chroma map on the whole photo).
        The result is always RGB (a gray input is not written back as one channel).
        ``result.extra`` is a dict with the fitted ``matrix`` (3, 4) (None when no face was found).
        """
        if whole_photo not in WHOLE_PHOTO or gray_background not in GRAY_BACKGROUND:
            raise ValueError(f"whole_photo: {'|'.join(WHOLE_PHOTO)}; gray_background: {'|'.join(GRAY_BACKGROUND)}; "
                             f"got {whole_photo!r}, {gray_background!r}")
        result = self.restorer.restore(
            image, fidelity=float(fidelity), quality=float(quality), upscale=upscale, aligned=aligned,
            grayscale="off", color_fix="none", face_upsample=face_upsample, channel_order=channel_order,
            **restore_kwargs,
        )
        return recolor_result(result, image, upscale=upscale, aligned=aligned, whole_photo=whole_photo,
                              gray_background=gray_background, channel_order=channel_order, reg=self.reg)

    def fit(self, faces) -> np.ndarray:
        """The (3, 4) colour map from the input crops of ``faces`` (FaceRecords) to their restored versions."""
        return fit_faces(faces, reg=self.reg)


def recolor_result(result, source: Any, *, upscale: float = 1.0, aligned: bool = False, whole_photo: str = "affine",
                   gray_background: str = "keep", channel_order: str = "rgb", reg: float = 1e-2):
    """Redo the output of a ``RestoreResult`` (restored with ``grayscale="off"``) for colour enhancement:
    fit the faces' colour map, apply it to the photo ``source`` (as given to ``restore``), paste the faces.
    Sets ``result.output`` / ``.image`` (always RGB) and ``result.extra = {"matrix": (3, 4) | None}``;
    returns ``result``."""
    from iqpfr.face.pipeline import paste_faces, upscale_image
    from iqpfr.restorer import load_input

    if whole_photo not in WHOLE_PHOTO:
        raise ValueError(f"whole_photo must be one of {'|'.join(WHOLE_PHOTO)}, got {whole_photo!r}")
    if gray_background not in GRAY_BACKGROUND:
        raise ValueError(f"gray_background must be one of {'|'.join(GRAY_BACKGROUND)}, got {gray_background!r}")
    faces = [f for f in result.faces if f.restored is not None]
    matrix = fit_faces(faces, reg=reg) if faces else None
    if aligned or whole_photo == "none" or matrix is None:
        output = replace(result.output, gray=False)
    else:
        from iqpfr.tasks.color.transform import apply_color_transform, is_gray

        loaded, _ = load_input(source, channel_order)
        background = upscale_image(loaded, upscale)
        pixels = background.pixels.astype(np.float32) / background.max_value
        gray_photo = loaded.gray or is_gray(loaded.pixels.astype(np.float32) / loaded.max_value)
        if not (gray_photo and gray_background == "keep"):
            pixels = apply_color_transform(pixels, matrix)
        background = background.with_pixels(
            np.round(pixels * background.max_value).astype(background.pixels.dtype), background.alpha)
        output = paste_faces(replace(loaded, gray=False), faces, upscale=upscale, color="none",
                             grayscale="off", background=replace(background, gray=False))
    result.output = output
    image = output.pixels if output.alpha is None else np.dstack([output.pixels, output.alpha])
    if channel_order == "bgr":
        image = np.ascontiguousarray(image[..., [2, 1, 0, 3][: image.shape[-1]]])
    result.image = image
    result.extra = {"matrix": matrix}
    if not faces:
        result.notes.append("no face restored: the photo's colours are unchanged")
    return result


def fit_faces(faces, *, reg: float = 1e-2) -> np.ndarray:
    """The (3, 4) colour map from the input crops of ``faces`` (FaceRecords) to their restored
    versions, weighted by each face's soft mask."""
    import cv2

    from iqpfr.face.align import transform_points
    from iqpfr.face.paste import soft_face_mask
    from iqpfr.tasks.color.transform import fit_color_transform

    sources, targets, weights = [], [], []
    for face in faces:
        crop = face.crop.astype(np.float32)
        size = crop.shape[0]
        restored = face.restored
        if restored.shape[:2] != crop.shape[:2]:  # an up-sampled face: compare at the crop's size
            restored = cv2.resize(restored, (size, size), interpolation=cv2.INTER_AREA)
        points = None if face.landmarks68 is None else transform_points(face.landmarks68, face.affine)
        sources.append(crop)
        targets.append(np.clip(restored, 0.0, 1.0))
        weights.append(soft_face_mask(size, points))
    return fit_color_transform(sources, targets, weights, reg=reg)
