"""Quality-adaptive restoration (``--fidelity auto``): the input face's own quality sets how much
of the restoration is used.

A restorer that changes a face that needed nothing fails its user. So before restoring, every
input face is scored with the no-reference quality prior (NIQE, aligned to the FFHQ template at
512 px, where it separates clean faces from degraded ones: ``gpen_ffhq10`` at 512 px scores 2.9-4.6,
the same faces under the "large" degradation 13-23, CodeFormer's real LQ faces 10.4-16.5 (cropped)
and 4.4-12.3 (gray); ``scripts/default_model/do_no_harm.py`` reports these ranges). The score
becomes a restoration strength s in [0, 1]:

    s = clip((NIQE - NIQE_CLEAN) / (NIQE_RUINED - NIQE_CLEAN), 0, 1)

and the output is ``s * restored + (1 - s) * input`` (in a photo: the paste mask times s, so the
input's own pixels, at their own resolution, stay where the face is clean). The fidelity weight
follows: w = 1 - (1 - W_RUINED) * s (1 for a clean face, 0.5 for a ruined one), so a quality-
conditioned network also leans to fidelity on good inputs.

With a super-resolution network at hand (``face_upsample``), the restoration itself is a mix too:
``g * upsampled(network output) + (1 - g) * upsampled(input crop)`` with g rising from 0 at NIQE
GENERATIVE_FROM to 1 at GENERATIVE_FULL, so the codebook prior is used where the input is too far
gone for super-resolution alone. Deterministic: no random numbers.
"""

from __future__ import annotations

import numpy as np

# NIQE (standard pristine model, 512-px aligned face) at which a face counts as clean / ruined
NIQE_CLEAN = 5.0
NIQE_RUINED = 8.0
# NIQE from which the generative network takes over from the super-resolution fidelity path
GENERATIVE_FROM = 12.0
GENERATIVE_FULL = 18.0
# fidelity weight used for a ruined face (the fixed default of `iqpfr restore -w`)
W_RUINED = 0.5
QUALITY_SIDE = 512

_scorer = None


def _niqe():
    global _scorer
    if _scorer is None:
        from iqpfr.quality.niqe import NIQE

        _scorer = NIQE()
    return _scorer


def face_niqe(face: np.ndarray) -> float:
    """NIQE of one aligned face (S, S, 3) float32 in [0, 1] (or uint8), resized to 512 px."""
    import cv2
    import torch

    array = np.asarray(face)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    if array.shape[0] != QUALITY_SIDE:
        shrink = array.shape[0] > QUALITY_SIDE
        array = cv2.resize(array, (QUALITY_SIDE, QUALITY_SIDE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    x = torch.from_numpy(np.ascontiguousarray(np.clip(array, 0, 1))).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return float(_niqe()(x)[0])


def restoration_strength(niqe: float) -> float:
    """s in [0, 1]: 0 for a clean face (NIQE <= NIQE_CLEAN), 1 for a ruined one (>= NIQE_RUINED)."""
    if not np.isfinite(niqe):
        return 1.0
    return float(np.clip((niqe - NIQE_CLEAN) / (NIQE_RUINED - NIQE_CLEAN), 0.0, 1.0))


def adaptive_fidelity(strength: float) -> float:
    """The fidelity weight w for restoration strength s: 1 at s = 0, W_RUINED at s = 1."""
    return float(1.0 - (1.0 - W_RUINED) * strength)


def generative_share(niqe: float) -> float:
    """g in [0, 1]: the share of a face's restoration taken from the generative network; the rest
    comes from the super-resolution fidelity path (Real-ESRGAN of the input crop). 0 up to
    GENERATIVE_FROM, 1 from GENERATIVE_FULL: moderately degraded faces keep their identity through
    super-resolution; only badly degraded ones need the codebook prior."""
    if not np.isfinite(niqe):
        return 1.0
    return float(np.clip((niqe - GENERATIVE_FROM) / (GENERATIVE_FULL - GENERATIVE_FROM), 0.0, 1.0))
