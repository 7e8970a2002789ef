"""Done-when checks on real faces: HQ faces beat their degraded copies; face-iqa tracks strength."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from iqpfr.quality import create_scorer
from iqpfr.quality.evaluate import pair_accuracy, read_faces, strength_correlation


@pytest.fixture(scope="module")
def gpen_faces():
    from iqpfr.data.image_files import list_images

    files = [p for p, _ in list_images([shared_path("data", "gpen_ffhq10")])]
    assert len(files) == 10
    return read_faces(files)


# BRISQUE is left out: it has no score without a user-supplied SVR model (none ships with iqpfr)
@pytest.mark.parametrize("name", ["niqe", "piqe", "face-iqa"])
def test_every_hq_face_beats_its_large_degradation(name, gpen_faces):
    """Each of the 10 FFHQ faces (at 512) scores better than its "large" blind degradation (seed 0)."""
    result = pair_accuracy(create_scorer(name), gpen_faces, preset="large", seed=0, size=512)
    margins = np.array(result["margins"])
    assert (margins > 0).all(), f"{name}: margins {np.round(margins, 3).tolist()}"


def test_face_iqa_spearman_on_held_out_faces():
    """Spearman(face-iqa, -strength) >= 0.8 on held-out training-split faces (never trained on).

    A 16-face subset of the 90 held-out files (01074..01089) with 4 "small"/"large" copies each; the
    full measurement is `iqpfr iqa eval` (README).
    """
    from iqpfr.data.image_files import list_images

    files = [p for p, _ in list_images([shared_path("data", "ffhq_train256")])][-16:]
    faces = read_faces(files)
    r = strength_correlation(create_scorer("face-iqa"), faces, n_degraded=4, seed=0, size=512)
    assert r["spearman_pooled"] >= 0.8, r
