"""Quality-adaptive restoration (``fidelity="auto"``): the input's NIQE sets strength, w and the
network's share; clean faces pass unchanged, ruined ones get the full restoration; the JSON says so."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from iqpfr.face import adaptive
from iqpfr.restorer import FaceRestorer

ASTRONAUT = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))


def test_strength_fidelity_and_share_are_monotone():
    niqe = np.linspace(0, 30, 61)
    strength = [adaptive.restoration_strength(n) for n in niqe]
    share = [adaptive.generative_share(n) for n in niqe]
    assert strength[0] == 0 and strength[-1] == 1 and np.all(np.diff(strength) >= 0)
    assert share[0] == 0 and share[-1] == 1 and np.all(np.diff(share) >= 0)
    assert adaptive.adaptive_fidelity(0.0) == 1.0 and adaptive.adaptive_fidelity(1.0) == adaptive.W_RUINED
    assert adaptive.restoration_strength(adaptive.NIQE_CLEAN) == 0.0
    assert adaptive.restoration_strength(adaptive.NIQE_RUINED) == 1.0
    assert adaptive.restoration_strength(float("nan")) == 1.0  # unknown quality: restore


def test_face_niqe_orders_sharp_and_blurred():
    import cv2

    from iqpfr.io import read_rgb

    face = read_rgb(ASTRONAUT)
    sharp = adaptive.face_niqe(face)
    blurred = adaptive.face_niqe(cv2.GaussianBlur(face, (0, 0), 4))
    assert blurred > sharp + 2


@pytest.fixture
def tiny_restorer():
    return FaceRestorer.from_pretrained(model="codeformer-tiny", random_init=True, device="cpu")


@pytest.mark.parametrize("niqe,expect_input", [(3.0, True), (30.0, False)])
def test_auto_keeps_clean_faces_and_restores_ruined_ones(tiny_restorer, monkeypatch, niqe, expect_input):
    from iqpfr.io import read_rgb

    monkeypatch.setattr(adaptive, "face_niqe", lambda face: niqe)
    face = read_rgb(ASTRONAUT)
    result = tiny_restorer.restore(face, aligned=True, fidelity="auto")
    record = result.faces[0]
    assert record.input_niqe == niqe
    if expect_input:
        assert record.strength == 0 and record.fidelity == 1.0
        assert np.array_equal(result.image, face)
    else:
        assert record.strength == 1 and record.fidelity == adaptive.W_RUINED
        fixed = tiny_restorer.restore(face, aligned=True, fidelity=adaptive.W_RUINED)
        assert np.array_equal(result.image, fixed.image)
        assert not np.array_equal(result.image, face)


def test_auto_in_a_photo_leaves_a_clean_face_untouched(tiny_restorer, monkeypatch):
    pytest.importorskip("dlib")
    from iqpfr.io import read_rgb

    monkeypatch.setattr(adaptive, "face_niqe", lambda face: 2.0)
    photo = read_rgb(ASTRONAUT)
    result = tiny_restorer.restore(photo, fidelity="auto")
    assert len(result.faces) == 1 and result.faces[0].strength == 0
    assert np.array_equal(result.image, photo)


def test_cli_reports_the_chosen_values(tmp_path, capsys):
    pytest.importorskip("dlib")
    from iqpfr.cli import main

    report = tmp_path / "r.json"
    code = main(["restore", str(ASTRONAUT), "-o", str(tmp_path / "out"), "--model", "codeformer-tiny",
                 "--random-init", "--device", "cpu", "--json", str(report), "-q"])
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["settings"]["fidelity"] == "auto"
    face = data["images"][0]["faces"][0]
    assert {"fidelity", "input_niqe", "strength", "generative"} <= set(face)
    assert abs(face["strength"] - adaptive.restoration_strength(face["input_niqe"])) < 1e-3
    # a fixed w still works and is what the report says
    code = main(["restore", str(ASTRONAUT), "-o", str(tmp_path / "out2"), "--model", "codeformer-tiny",
                 "--random-init", "--device", "cpu", "-w", "0.3", "--json", str(report), "-q"])
    assert code == 0
    face = json.loads(report.read_text())["images"][0]["faces"][0]
    assert face["fidelity"] == 0.3 and "strength" not in face


def test_sharp_real_faces_pass_unchanged(tiny_restorer):
    """gpen_ffhq10 at 512 px are clean: with auto they come back as they went in, whatever the network."""
    import cv2

    from iqpfr.io import image_files, read_rgb

    for path in image_files(shared_path("data", "gpen_ffhq10"))[:3]:
        face = cv2.resize(read_rgb(path), (512, 512), interpolation=cv2.INTER_AREA)
        result = tiny_restorer.restore(face, aligned=True)
        assert result.faces[0].strength == 0, result.faces[0].input_niqe
        assert np.array_equal(result.image, face)


def test_degraded_real_faces_are_restored(tiny_restorer):
    from iqpfr.io import image_files, read_rgb

    for path in image_files(shared_path("data", "codeformer_cropped_faces"))[:3]:
        result = tiny_restorer.restore(read_rgb(path), aligned=True)
        assert result.faces[0].strength == 1.0, result.faces[0].input_niqe

