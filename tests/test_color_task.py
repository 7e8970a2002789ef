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
    result = recolor_result(_result(photo, _record(crop, restored, 32)), photo, reg=1e-4, transfer="lsq")
    out = result.image.astype(np.float64) / 255
    assert result.image.shape == photo.shape and result.image.dtype == np.uint8
    before = np.abs(photo[:20].astype(np.float64) / 255 - clean[:20]).mean()
    after = np.abs(out[:20] - clean[:20]).mean()  # the border, far from the pasted face
    assert after < 0.25 * before
    none = recolor_result(_result(photo, _record(crop, restored, 32)), photo, whole_photo="none", transfer="lsq")
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

    enhancer = ColorEnhancer.from_pretrained("iqpfr-128-color", device="cpu")
    out = enhancer.restorer.restore_aligned(torch.full((1, 3, 128, 128), 0.5), fidelity=0.0, quality=0.95)
    assert out.shape == (1, 3, 128, 128) and torch.isfinite(out).all()


# ------------------------------------------------------------------ moment-matching transfer (the default)


def _face() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((96, 96))).astype(np.float64) / 255


def _lab_fade(img: np.ndarray, contrast: float = 0.7, saturation: float = 0.3) -> np.ndarray:
    from iqpfr.tasks.color.transfer import lab_to_srgb, srgb_to_lab

    lab = srgb_to_lab(img)
    mean = lab[..., 0].mean()
    lab[..., 0] = mean + contrast * (lab[..., 0] - mean)
    lab[..., 1:] *= saturation
    return lab_to_srgb(lab)


def test_lab_conversion_known_values_and_inverse():
    from iqpfr.tasks.color.transfer import lab_to_srgb, srgb_to_lab

    # white, black and sRGB red / green / blue (D65; published CIELab values)
    rgb = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    known = np.array([[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18],
                      [32.30, 79.19, -107.86]])
    assert np.abs(srgb_to_lab(rgb) - known).max() < 0.02
    x = np.random.default_rng(5).uniform(0, 1, (4, 50, 3))
    assert srgb_to_lab(x).shape == x.shape
    assert np.abs(lab_to_srgb(srgb_to_lab(x)) - x).max() < 1e-9


@pytest.mark.parametrize("method", ["diagonal", "mk"])
def test_transfer_inverts_a_known_fade_when_the_reference_is_the_clean_face(method):
    from iqpfr.tasks.color.transfer import fit_transfer

    clean = _face()
    faded = _lab_fade(clean)
    t = fit_transfer(faded, clean, None, method=method, space="lab", blur=0.0)
    assert np.abs(t.apply(faded) - clean).max() < 1e-3
    assert np.abs(np.diag(t.matrix) - [1 / 0.7, 1 / 0.3, 1 / 0.3]).max() < 1e-3


@pytest.mark.parametrize("method", ["diagonal", "mk"])
def test_transfer_inverts_a_per_channel_cast(method):
    from iqpfr.tasks.color.transfer import fit_transfer

    clean = 0.1 + 0.75 * _face()  # room for the cast without clipping
    gains, shifts = np.array([1.15, 0.9, 0.8]), np.array([-0.05, 0.03, 0.06])
    cast = clean * gains + shifts
    assert cast.min() >= 0 and cast.max() <= 1
    t = fit_transfer(cast, clean, np.ones(clean.shape[:2]), method=method, space="srgb", blur=0.0)
    assert np.abs(t.apply(cast) - clean).max() < 1e-3


def test_blurred_reference_does_not_shrink_the_gains_when_statistics_are_blurred():
    """The network's 128-px face is smoother than the input: least squares and unblurred moments
    shrink the recovered gains; statistics on both images blurred by 2 px recover them (within 3%)."""
    import cv2

    from iqpfr.tasks.color.transfer import fit_transfer

    clean = _face()
    faded = _lab_fade(clean)
    reference = cv2.GaussianBlur(clean, (0, 0), 1.0)
    true = np.array([1 / 0.7, 1 / 0.3, 1 / 0.3])
    sharp = np.diag(fit_transfer(faded, reference, None, blur=0.0).matrix)
    blurred = np.diag(fit_transfer(faded, reference, None, blur=2.0).matrix)
    assert np.all(sharp < 0.98 * true)
    assert np.abs(blurred / true - 1).max() < 0.03
    with pytest.raises(ValueError):
        fit_transfer(faded, reference, None, method="median")


def test_gray_input_takes_the_reference_chroma_on_its_own_lightness():
    from iqpfr.tasks.color.transfer import chroma_from_reference, srgb_to_lab

    clean = _face()
    gray = np.repeat(srgb_to_lab(clean)[..., :1], 3, axis=2)  # L only
    from iqpfr.tasks.color.transfer import lab_to_srgb

    gray_rgb = lab_to_srgb(np.concatenate([gray[..., :1], np.zeros_like(gray[..., :2])], -1))
    out = chroma_from_reference(gray_rgb, clean, chroma=1.0)
    assert np.abs(out - clean).max() < 1e-3  # L from the gray input, a/b from the reference: the clean face
    half = srgb_to_lab(chroma_from_reference(gray_rgb, clean, chroma=0.5).astype(np.float64))
    lab = srgb_to_lab(clean)
    inside = np.abs(lab[..., 1:]).max(-1) < 30  # away from the sRGB gamut edge
    assert np.abs(half[..., 1:][inside] - 0.5 * lab[..., 1:][inside]).max() < 0.5
    assert np.abs(half[..., 0] - lab[..., 0]).max() < 0.5


def test_default_recolor_of_an_aligned_face_keeps_its_structure():
    """transfer mk on an aligned face: the output is the INPUT recoloured (a sharp input and a blurred,
    clean-coloured reference give the input's detail with the reference's colour statistics)."""
    import cv2

    from iqpfr.tasks.color.enhancer import recolor_result

    clean = _face()
    faded = np.round(_lab_fade(clean) * 255).astype(np.uint8)
    record = _record(faded.astype(np.float64) / 255, cv2.GaussianBlur(clean, (0, 0), 1.0), 0)
    result = recolor_result(_result(faded, record), faded, aligned=True)
    out = result.image.astype(np.float64) / 255
    assert result.extra["transfer"] == "mk" and result.extra["matrix"].shape == (3, 3)
    err_in = np.abs(faded / 255 - clean).mean()
    assert np.abs(out - clean).mean() < 0.35 * err_in
    # sharper than the reference: the input's detail is kept
    lap = lambda a: np.abs(cv2.Laplacian(a.mean(-1), cv2.CV_64F)).mean()  # noqa: E731
    assert lap(out) > 1.3 * lap(cv2.GaussianBlur(clean, (0, 0), 1.0))
    # the face written as the restored face is the recoloured input crop too, not the reference
    assert np.abs(result.faces[0].restored - out).max() < 2 / 255
