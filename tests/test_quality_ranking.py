"""Done-when checks on real faces: HQ faces beat their degraded copies; face-iqa tracks strength."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from iqpfr.quality import create_scorer
from iqpfr.quality.evaluate import read_faces, strength_correlation
from iqpfr.quality.synth import degrade_face, draw_params, to_size


@pytest.fixture(scope="module")
def gpen_pairs():
    """The 10 FFHQ faces at 512 and their "large" blind degradations (seed 0), as tensors in [0, 1]."""
    from iqpfr.io import list_images

    files = [p for p, _ in list_images([shared_path("data", "gpen_ffhq10")])]
    assert len(files) == 10
    faces = read_faces(files)
    clean = [to_size(f, 512) for f in faces]
    degraded = []
    for i, face in enumerate(faces):
        params = draw_params(np.random.default_rng([0, 7, i]), ("large",))
        degraded.append(degrade_face(face, params, i, 512))

    def tensor(images):
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255

    return tensor(clean), tensor(degraded)


# BRISQUE is left out: it has no score without a user-supplied SVR model (none ships with iqpfr)
@pytest.mark.parametrize("name", ["niqe", "piqe", "face-iqa"])
def test_every_hq_face_beats_its_large_degradation(name, gpen_pairs):
    """Each of the 10 FFHQ faces (at 512) scores better than its "large" blind degradation (seed 0)."""
    scorer = create_scorer(name)
    clean, degraded = gpen_pairs
    with torch.no_grad():
        margins = (scorer.score(clean) - scorer.score(degraded)).numpy()
    if not scorer.higher_better:
        margins = -margins
    assert (margins > 0).all(), f"{name}: margins {np.round(margins, 3).tolist()}"


def test_face_iqa_spearman_on_held_out_faces():
    """Spearman(face-iqa, -strength) >= 0.8 on held-out training-split faces (never trained on).

    A 16-face subset of the 90 held-out files (01074..01089) with 4 "small"/"large" copies each; the
    full measurement is `iqpfr iqa eval` (README).
    """
    from iqpfr.io import list_images

    files = [p for p, _ in list_images([shared_path("data", "ffhq_train256")])][-16:]
    faces = read_faces(files)
    r = strength_correlation(create_scorer("face-iqa"), faces, n_degraded=4, seed=0, size=512)
    assert r["spearman_pooled"] >= 0.8, r
