"""Face colour enhancement (iqpfr.tasks.color): colour-map fitting, the whole-photo step, metrics, CLI."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
import pytest

from iqpfr.tasks.color.metrics import colourfulness, delta_e_2000
from iqpfr.tasks.color.transform import (
    IDENTITY,
    apply_color_transform,
    fit_color_transform,
    is_gray,
    linear_to_srgb,
    srgb_to_linear,
)

ASTRONAUT = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
CAST = np.array([[0.85, 0.05, 0.0, 0.02], [0.02, 1.1, 0.03, -0.01], [0.0, -0.04, 0.7, 0.03]])


def test_fit_recovers_a_known_affine_cast():
    rng = np.random.default_rng(0)
    source = rng.uniform(0.15, 0.8, (40, 40, 3))  # no clipping of the cast target
    target = linear_to_srgb(srgb_to_linear(source) @ CAST[:, :3].T + CAST[:, 3])
    assert np.abs(fit_color_transform(source, target, reg=0.0) - CAST).max() < 1e-6
    # a weak pull toward the identity barely moves it; weights and lists of faces work
    weights = rng.uniform(0, 1, (40, 40))
    m = fit_color_transform([source[:20], source[20:]], [target[:20], target[20:]], [weights[:20], weights[20:]], reg=1e-4)
    assert np.abs(m - CAST).max() < 5e-3
    out = apply_color_transform(source.astype(np.float32), m)
    assert out.dtype == np.float32 and np.abs(out - target).max() < 5e-3


def test_fit_strong_regularisation_and_zero_weights_give_identity():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 1, (10, 10, 3))
    assert np.abs(fit_color_transform(source, source * 0.5, reg=1e6) - IDENTITY).max() < 1e-4
    assert np.array_equal(fit_color_transform(source, source * 0.5, np.zeros((10, 10))), IDENTITY)
    with pytest.raises(ValueError):
        fit_color_transform(source, source[:5])


def test_gray_input_map_is_a_luminance_to_colour_toning():
    """On gray pixels only the column sums are fitted: the map turns gray into a warm tone."""
    rng = np.random.default_rng(2)
    y = rng.uniform(0.1, 0.9, (30, 30, 1))
    gray = np.repeat(y, 3, axis=2)
    warm = np.concatenate([y * 1.0, y * 0.8, y * 0.6], axis=2)
    m = fit_color_transform(gray, warm, reg=1e-4)
    toned = apply_color_transform(gray.astype(np.float32), m)
    assert np.abs(toned - warm).max() < 0.02
    assert is_gray(gray) and not is_gray(toned)


def _record(crop: np.ndarray, restored: np.ndarray, offset: int):
    from iqpfr.face.pipeline import FaceRecord

    size = crop.shape[0]
    affine = np.array([[1.0, 0.0, -offset], [0.0, 1.0, -offset]])
    return FaceRecord(index=0, box=np.array([offset, offset, offset + size, offset + size], float), score=1.0,
                      landmarks=np.zeros((5, 2)), affine=affine, crop=crop.astype(np.float32),
                      restored=restored.astype(np.float32))


def _result(photo: np.ndarray, record):
    from iqpfr.io import from_array
    from iqpfr.restorer import RestoreResult

    return RestoreResult(photo, [record], from_array(photo), [], {}, photo)


def test_whole_photo_step_removes_the_cast_outside_the_face():
    from iqpfr.tasks.color.enhancer import recolor_result

    rng = np.random.default_rng(3)
    clean = rng.uniform(0.1, 0.9, (96, 96, 3))
    photo = np.round(linear_to_srgb(srgb_to_linear(clean) @ CAST[:, :3].T + CAST[:, 3]) * 255).astype(np.uint8)
    crop = photo[32:64, 32:64].astype(np.float64) / 255
    restored = clean[32:64, 32:64]  # a "model" that removes the cast exactly
    result = recolor_result(_result(photo, _record(crop, restored, 32)), photo, reg=1e-4)
    out = result.image.astype(np.float64) / 255
    assert result.image.shape == photo.shape and result.image.dtype == np.uint8
    before = np.abs(photo[:20].astype(np.float64) / 255 - clean[:20]).mean()
    after = np.abs(out[:20] - clean[:20]).mean()  # the border, far from the pasted face
    assert after < 0.25 * before
    none = recolor_result(_result(photo, _record(crop, restored, 32)), photo, whole_photo="none")
    assert np.array_equal(none.image[:20], photo[:20])
    assert result.extra["matrix"].shape == (3, 4)


def test_gray_photo_keep_or_tone():
    from iqpfr.tasks.color.enhancer import recolor_result

    rng = np.random.default_rng(4)
    y = rng.uniform(0.2, 0.8, (96, 96, 1))
    photo = np.round(np.repeat(y, 3, axis=2) * 255).astype(np.uint8)
    crop = photo[32:64, 32:64].astype(np.float64) / 255
    warm = crop * np.array([1.0, 0.85, 0.7])
    kept = recolor_result(_result(photo, _record(crop, warm, 32)), photo, gray_background="keep")
    assert np.array_equal(kept.image[:20], photo[:20])  # background stays gray
    assert not is_gray(kept.image[40:56, 40:56].astype(np.float64) / 255)  # the face has colour
    toned = recolor_result(_result(photo, _record(crop, warm, 32)), photo, gray_background="tone")
    border = toned.image[:20].astype(np.float64)
    assert border[..., 0].mean() > border[..., 2].mean() + 10  # the warm tone reaches the background
    with pytest.raises(ValueError):
        recolor_result(_result(photo, _record(crop, warm, 32)), photo, gray_background="sepia")


# Sharma, Wu, Dalal (2005), "The CIEDE2000 color-difference formula", Table 1 (pairs 1, 2, 7, 17, 25)
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
]


def test_ciede2000_matches_sharma_table():
    lab1 = np.array([p[0] for p in SHARMA]).T
    lab2 = np.array([p[1] for p in SHARMA]).T
    expected = np.array([p[2] for p in SHARMA])
    assert np.abs(delta_e_2000(lab1, lab2) - expected).max() < 1e-4
    assert np.abs(delta_e_2000(lab2, lab1) - expected).max() < 1e-4  # symmetric


def test_colourfulness_formula():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:2] = (255, 0, 0)
    img[2:] = (0, 255, 0)
    # rg: +-255 (mean 0, std 255); yb: 127.5 everywhere (std 0) -> 255 + 0.3 * 127.5
    assert colourfulness(img) == pytest.approx(293.25)
    assert colourfulness(img.astype(np.float32) / 255) == pytest.approx(293.25, rel=1e-5)
    assert colourfulness(np.full((5, 5, 3), 128, np.uint8)) == 0.0


def test_cli_task_color_on_a_gray_aligned_face(tmp_path, capsys):
    """--task color writes RGB for a one-channel input (not kept monochrome) and reports w 0, q 0.95."""
    from PIL import Image

    from iqpfr.cli import main

    face = tmp_path / "face.png"
    Image.open(ASTRONAUT).convert("L").resize((64, 64)).save(face)
    report = tmp_path / "r.json"
    code = main(["restore", str(face), "-o", str(tmp_path / "out"), "--task", "color", "--aligned",
                 "--model", "iqpfr-tiny", "--random-init", "--device", "cpu", "--json", str(report), "-q"])
    assert code == 0, capsys.readouterr().err
    written = sorted((tmp_path / "out").rglob("*.png"))
    assert written
    out = Image.open([p for p in written if "final" in p.parts[-2] or "final" in p.name][0])
    assert out.mode == "RGB"
    data = json.loads(report.read_text())
    assert data["settings"]["fidelity"] in (0, 0.0) and data["settings"].get("grayscale", "off") == "off"


def test_cli_task_color_whole_photo(tmp_path, capsys):
    """Detect, restore, fit the colour map and apply it to the photo (random tiny network)."""
    pytest.importorskip("dlib")
    from PIL import Image

    from iqpfr.cli import main

    gray = tmp_path / "gray.png"
    Image.open(ASTRONAUT).convert("L").save(gray)
    code = main(["restore", str(gray), "-o", str(tmp_path / "out"), "--task", "color", "--model", "codeformer-tiny",
                 "--random-init", "--device", "cpu", "-q"])
    assert code == 0, capsys.readouterr().err
    out = [p for p in (tmp_path / "out").rglob("*.png")]
    assert len(out) == 1
    image = np.asarray(Image.open(out[0]))
    assert image.ndim == 3 and image.shape[2] == 3  # one-channel input, colour output
    assert image.shape[:2] == Image.open(gray).size[::-1]


def test_shipped_colour_model_is_pinned_and_loads():
    import hashlib

    from iqpfr.restorer import embedded_weights_path
    from iqpfr.weights.zoo import get_entry

    entry = get_entry("iqpfr-128-color")
    path = embedded_weights_path("iqpfr-128-color")
    if not path.is_file():
        pytest.skip(f"{path.name} is not part of this installation")
    data = path.read_bytes()
    assert entry.embedded and entry.kind == "restoration" and len(data) == entry.size < 13_000_000
    assert hashlib.sha256(data).hexdigest() == entry.sha256
    import torch

    from iqpfr.tasks.color.enhancer import ColorEnhancer

    enhancer = ColorEnhancer.from_pretrained(device="cpu")
    out = enhancer.restorer.restore_aligned(torch.full((1, 3, 128, 128), 0.5), fidelity=0.0, quality=0.95)
    assert out.shape == (1, 3, 128, 128) and torch.isfinite(out).all()
