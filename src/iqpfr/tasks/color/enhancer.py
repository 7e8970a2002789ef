"""``ColorEnhancer``: face colour enhancement of whole photos: the network gives each face's colours,
a colour transfer fitted from the input faces to the network's faces recolours the input photo.

1. Every face is detected, aligned and restored by ``iqpfr-128`` (default; ``iqpfr-128-color`` measured
   worse as the colour reference, README "Face colour enhancement") at quality 0.95 and w = 0 (the
   authors' colour inference), with ``grayscale="off"``.
2. ``transfer="mk"`` (default): one Monge-Kantorovich moment-matching map in CIELab (mean and
   covariance of the input faces onto the network's faces, on the soft face masks;
   ``iqpfr.tasks.color.transfer``) is applied to the INPUT photo (``whole_photo="affine"``, default)
   or only inside the faces (``"none"``): the input keeps its structure and identity, the network
   only sets the colour statistics. ``"diagonal"``: per-channel mean/std. Settings chosen on
   training faces (``scripts/color/tune_transfer.py``), not on the evaluation faces.
3. A gray photo has no chroma to transfer: the faces get the network's a/b (blurred 2 px, times
   ``chroma`` 0.8) on their own lightness; ``gray_background="keep"`` leaves the rest gray,
   ``"tone"`` applies a/b as linear functions of L (fitted on the faces) to the whole photo.
4. ``transfer="lsq"`` / ``"network"``: the earlier step (the network's faces pasted; ``lsq``'s 3x4
   least-squares linear-RGB map on the rest of the photo with ``affine``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

DEFAULT_WEIGHTS = "iqpfr-128"
DEFAULT_QUALITY = 0.95
DEFAULT_FIDELITY = 0.0
GRAY_BACKGROUND = ("tone", "keep")
WHOLE_PHOTO = ("affine", "none")
TRANSFERS = ("mk", "diagonal", "lsq", "network")
DEFAULT_TRANSFER = "mk"
DEFAULT_CHROMA = 0.8


class ColorEnhancer:
    """Face colour enhancement with a ``FaceRestorer`` (colour model) plus a whole-photo colour map."""

    def __init__(self, restorer, *, reg: float = 1e-2):
        self.restorer = restorer
        self.reg = reg

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, **kwargs: Any) -> ColorEnhancer:
        """Load the colour reference model (default the embedded ``iqpfr-128``; ``"iqpfr-128-color"`` is the
        colour-trained one) or any restoration weights.

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
        whole_photo: str = "affine",
        gray_background: str = "keep",
        transfer: str = DEFAULT_TRANSFER,
        chroma: float = DEFAULT_CHROMA,
        face_upsample: bool = False,
        channel_order: str = "rgb",
        **restore_kwargs: Any,
    ):
        """Enhance the colours of one photo -> ``iqpfr.restorer.RestoreResult``.

        image: as ``FaceRestorer.restore`` (path, PIL, numpy, tensor). quality / fidelity: the model's
        q and w (default 0.95 / 0). transfer: ``mk`` (default) | ``diagonal`` | ``lsq`` | ``network``
        (see the module docstring). whole_photo: ``affine`` (the faces' fitted transfer on the whole
        photo, default) or ``none`` (only the faces change). gray_background: for a gray photo,
        ``keep`` (only the faces get colour, default) or ``tone``. chroma: the share of the network's
        a/b given to a gray photo (0.8). The result is always RGB (a gray input is not written back
        as one channel). ``result.extra``: ``transfer``, ``gray`` and the fitted ``matrix``
        ((3, 3) + ``offset`` for mk/diagonal in ``space``; (3, 4) for lsq; None without a face).
        """
        if transfer not in TRANSFERS:
            raise ValueError(f"transfer must be one of {'|'.join(TRANSFERS)}, got {transfer!r}")
        if whole_photo not in WHOLE_PHOTO or gray_background not in GRAY_BACKGROUND:
            raise ValueError(f"whole_photo: {'|'.join(WHOLE_PHOTO)}; gray_background: {'|'.join(GRAY_BACKGROUND)}; "
                             f"got {whole_photo!r}, {gray_background!r}")
        result = self.restorer.restore(
            image, fidelity=float(fidelity), quality=float(quality), upscale=upscale, aligned=aligned,
            grayscale="off", color_fix="none", face_upsample=face_upsample, channel_order=channel_order,
            **restore_kwargs,
        )
        return recolor_result(result, image, upscale=upscale, aligned=aligned, whole_photo=whole_photo,
                              gray_background=gray_background, channel_order=channel_order, reg=self.reg,
                              transfer=transfer, chroma=chroma)

    def fit(self, faces) -> np.ndarray:
        """The (3, 4) colour map from the input crops of ``faces`` (FaceRecords) to their restored versions."""
        return fit_faces(faces, reg=self.reg)


def recolor_result(result, source: Any, *, upscale: float = 1.0, aligned: bool = False, whole_photo: str = "affine",
                   gray_background: str = "keep", channel_order: str = "rgb", reg: float = 1e-2,
                   transfer: str = DEFAULT_TRANSFER, chroma: float = DEFAULT_CHROMA):
    """Redo the output of a ``RestoreResult`` (restored with ``grayscale="off"``) for colour enhancement.

    transfer ``mk`` (default) / ``diagonal``: moment matching in CIELab from the input face crops to the
    network's faces (``iqpfr.tasks.color.transfer``), applied to the INPUT (its structure and identity
    kept): to the whole photo (``whole_photo="affine"``) or only inside the faces (``"none"``). A gray
    photo instead gets the network's a/b (blurred, times ``chroma``) on its own lightness on the faces,
    and ``gray_background`` keep (the rest stays gray) or tone (a/b as linear functions of L, fitted
    on the faces, on the whole photo). transfer ``lsq`` / ``network``: the earlier behaviour (the
    network's faces pasted; ``lsq``'s 3x4 least-squares map, ``reg``, on the photo with ``affine``).
    Sets ``result.output`` / ``.image`` (always RGB) and ``result.extra``; returns ``result``.
    """
    if whole_photo not in WHOLE_PHOTO:
        raise ValueError(f"whole_photo must be one of {'|'.join(WHOLE_PHOTO)}, got {whole_photo!r}")
    if gray_background not in GRAY_BACKGROUND:
        raise ValueError(f"gray_background must be one of {'|'.join(GRAY_BACKGROUND)}, got {gray_background!r}")
    if transfer not in TRANSFERS:
        raise ValueError(f"transfer must be one of {'|'.join(TRANSFERS)}, got {transfer!r}")
    if transfer in ("lsq", "network"):
        return _recolor_lsq(result, source, upscale=upscale, aligned=aligned,
                            whole_photo="none" if transfer == "network" else whole_photo,
                            gray_background=gray_background, channel_order=channel_order, reg=reg,
                            transfer=transfer)
    import cv2

    from iqpfr.face.pipeline import paste_faces, upscale_image
    from iqpfr.restorer import load_input
    from iqpfr.tasks.color.transfer import chroma_from_reference, fit_tone
    from iqpfr.tasks.color.transform import is_gray

    faces = [f for f in result.faces if f.restored is not None]
    loaded, _ = load_input(source, channel_order)
    background = upscale_image(loaded, upscale)
    pixels = background.pixels.astype(np.float32) / background.max_value
    gray_photo = loaded.gray or is_gray(loaded.pixels.astype(np.float32) / loaded.max_value)
    extra: dict[str, Any] = {"transfer": transfer, "gray": bool(gray_photo), "matrix": None}
    if faces and not gray_photo:
        mapping = fit_faces_transfer(faces, method=transfer)
        extra.update(matrix=mapping.matrix, offset=mapping.offset, space=mapping.space)
        for face in faces:  # the faces written as restored_faces are the recoloured input crops
            face.restored = mapping.apply(_crop_at(face))
        # affine / aligned: the input's own pixels recoloured, nothing pasted; none: the faces pasted
        pixels = mapping.apply(pixels) if aligned or whole_photo == "affine" else None
    elif faces:
        if aligned:
            ref = cv2.resize(np.clip(faces[0].restored, 0, 1), background.size, interpolation=cv2.INTER_CUBIC)
            pixels = chroma_from_reference(pixels, ref, chroma=chroma, blur=GRAY_BLUR * background.size[0] / ref_size(faces[0]))
            faces[0].restored = chroma_from_reference(_crop_at(faces[0]), _ref_at(faces[0]), chroma=chroma, blur=GRAY_BLUR)
        else:
            toning = None
            if gray_background == "tone":
                toning = fit_tone([_crop_at(f) for f in faces], [_ref_at(f) for f in faces], _masks(faces), chroma=chroma)
                pixels = toning.apply(pixels)
            for face in faces:
                face.restored = chroma_from_reference(_crop_at(face), _ref_at(face), chroma=chroma, blur=GRAY_BLUR)
            if toning is None:
                pixels = None
    # the recoloured photo is the result as it is unless faces are pasted: faces found in a whole
    # photo whose recolouring is limited to them (whole_photo "none", or a gray photo)
    bg = None if pixels is None else replace(background.with_pixels(
        np.round(np.clip(pixels, 0, 1) * background.max_value).astype(background.pixels.dtype), background.alpha),
        gray=False)
    if faces and not aligned and (gray_photo or whole_photo == "none"):
        output = paste_faces(replace(loaded, gray=False), faces, upscale=upscale, color="none", grayscale="off",
                             background=bg)
    else:
        output = bg
    return _finish(result, output, channel_order, extra, faces)


GRAY_BLUR = 2.0  # px at the 128-px face: the network's a/b are blurred before use (chosen on training faces)


def ref_size(face) -> int:
    return int(face.crop.shape[0])


def _crop_at(face) -> np.ndarray:
    """The face's input crop at the size of its restored face (float [0, 1])."""
    import cv2

    crop = np.clip(face.crop.astype(np.float32), 0, 1)
    size = face.restored.shape[0]
    if crop.shape[0] != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
    return crop


def _ref_at(face) -> np.ndarray:
    return np.clip(face.restored.astype(np.float32), 0, 1)


def _masks(faces) -> list[np.ndarray]:
    from iqpfr.face.align import transform_points
    from iqpfr.face.paste import soft_face_mask

    out = []
    for face in faces:
        size = face.restored.shape[0]
        factor = size / face.crop.shape[0]
        points = None if face.landmarks68 is None else transform_points(face.landmarks68, face.affine) * factor
        out.append(soft_face_mask(size, points))
    return out


def fit_faces_transfer(faces, *, method: str = DEFAULT_TRANSFER):
    """The moment-matching ``ColorTransfer`` (CIELab, face masks) from the faces' input crops to their
    restored versions."""
    from iqpfr.tasks.color.transfer import fit_transfer

    return fit_transfer([_crop_at(f) for f in faces], [_ref_at(f) for f in faces], _masks(faces), method=method,
                        space="lab", blur=0.0)


def _finish(result, output, channel_order: str, extra: dict, faces):
    result.output = output
    image = output.pixels if output.alpha is None else np.dstack([output.pixels, output.alpha])
    if channel_order == "bgr":
        image = np.ascontiguousarray(image[..., [2, 1, 0, 3][: image.shape[-1]]])
    result.image = image
    result.extra = extra
    if not faces:
        result.notes.append("no face restored: the photo's colours are unchanged")
    return result


def _recolor_lsq(result, source: Any, *, upscale: float, aligned: bool, whole_photo: str, gray_background: str,
                 channel_order: str, reg: float, transfer: str = "lsq"):
    """The earlier step: the network's faces pasted; the 3x4 least-squares map on the photo (``affine``)."""
    from iqpfr.face.pipeline import paste_faces, upscale_image
    from iqpfr.restorer import load_input

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
    return _finish(result, output, channel_order, {"transfer": transfer, "matrix": matrix}, faces)


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
