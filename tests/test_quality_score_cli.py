"""`iqpfr score`: CSV layout, min-max normalisation with direction, ensemble S, resume, bad files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from iqpfr.cli import main
from iqpfr.quality.ensemble import ensemble_average, hq_split_summary, minmax_normalize


def _write_faces(folder, n=4, size=112):
    """Images of increasing blur: quality decreases with the index."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 1.0)
    paths = []
    for i in range(n):
        img = base if i == 0 else cv2.GaussianBlur(base, (0, 0), 1.0 + 2 * i)
        p = folder / f"img{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_minmax_direction_and_ensemble():
    raw = np.array([2.0, 4.0, 6.0])
    up = minmax_normalize(raw, higher_better=True)
    down = minmax_normalize(raw, higher_better=False)
    assert up == pytest.approx([0, 0.5, 1], abs=1e-5)
    assert down == pytest.approx([1, 0.5, 0], abs=1e-5)
    assert up.max() < 1.0  # the 1e-6 keeps S in [0, 1)
    s = ensemble_average([up, down])
    assert s == pytest.approx([0.5, 0.5, 0.5], abs=1e-5)
    summary = hq_split_summary(np.array([0.1, 0.75, 0.8, 0.95]), 0.7)
    assert summary["n_hq"] == 3 and summary["share_hq"] == pytest.approx(0.75)
    assert summary["buckets"][7] == 1 and summary["buckets"][9] == 1


def test_score_cli_columns_normalisation_and_resume(tmp_path, capsys):
    paths = _write_faces(tmp_path / "imgs")
    out = tmp_path / "scores.csv"
    rc = main(["score", str(tmp_path / "imgs"), "--metrics", "piqe,face-iqa", "-o", str(out), "--batch-size", "3"])
    assert rc == 0
    rows = _read(out)
    assert list(rows[0]) == ["path", "imagename", "piqe", "face-iqa", "piqe_norm", "face-iqa_norm", "score"]
    assert [r["imagename"] for r in rows] == [p.name for p in paths]
    piqe = np.array([float(r["piqe"]) for r in rows])
    face = np.array([float(r["face-iqa"]) for r in rows])
    # direction: PIQE is lower-better, so its best (smallest) raw value normalises to ~1
    pn = np.array([float(r["piqe_norm"]) for r in rows])
    assert pn == pytest.approx((piqe.max() - piqe) / (piqe.max() - piqe.min() + 1e-6), abs=1e-6)
    fn = np.array([float(r["face-iqa_norm"]) for r in rows])
    assert fn == pytest.approx((face - face.min()) / (face.max() - face.min() + 1e-6), abs=1e-6)
    s = np.array([float(r["score"]) for r in rows])
    assert s == pytest.approx((pn + fn) / 2, abs=1e-6)
    assert (out.parent / "scores_hist.png").stat().st_size > 1000
    meta = json.loads((out.parent / "scores.csv.json").read_text())
    assert meta["higher_better"] == {"piqe": False, "face-iqa": True}
    assert "HQ+ split" in capsys.readouterr().out

    # resume: an existing row is not re-scored (a sentinel value survives), a new image is added
    lines = out.read_text().splitlines()
    first = lines[1].split(",")
    first[2] = "123.5"
    lines[1] = ",".join(first)
    out.write_text("\n".join(lines) + "\n")
    _write_faces(tmp_path / "more", n=1)
    (tmp_path / "more" / "img0.png").rename(tmp_path / "more" / "extra.png")
    rc = main(["score", str(tmp_path / "imgs"), str(tmp_path / "more" / "*.png"), "--metrics", "piqe,face-iqa",
               "-o", str(out), "--no-hist"])
    assert rc == 0
    rows2 = _read(out)
    assert len(rows2) == 5 and rows2[0]["piqe"] == "123.5"
    assert rows2[-1]["imagename"] == "extra.png"
    piqe2 = np.array([float(r["piqe"]) for r in rows2])
    assert float(rows2[0]["piqe_norm"]) == pytest.approx(0.0, abs=1e-6)  # the sentinel is now the worst PIQE
    assert float(rows2[1]["piqe_norm"]) == pytest.approx((123.5 - piqe2[1]) / (123.5 - piqe2.min() + 1e-6), abs=1e-6)


def test_score_cli_reports_bad_image_and_fails(tmp_path, capsys):
    _write_faces(tmp_path / "imgs", n=2)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "s.csv"
    rc = main(["score", str(tmp_path / "imgs"), "--metrics", "piqe", "-o", str(out), "--no-hist"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.png" in err
    assert [r["imagename"] for r in _read(out)] == ["img0.png", "img1.png"]


def test_score_cli_refuses_to_drop_existing_metrics(tmp_path, capsys):
    _write_faces(tmp_path / "imgs", n=1)
    out = tmp_path / "s.csv"
    assert main(["score", str(tmp_path / "imgs"), "--metrics", "piqe", "-o", str(out), "--no-hist"]) == 0
    before = out.read_text()
    assert main(["score", str(tmp_path / "imgs"), "--metrics", "face-iqa", "-o", str(out), "--no-hist"]) == 2
    assert "piqe" in capsys.readouterr().err
    assert out.read_text() == before


def test_score_cli_missing_input(tmp_path, capsys):
    assert main(["score", str(tmp_path / "nope"), "-o", str(tmp_path / "s.csv")]) == 2
    assert "nope" in capsys.readouterr().err


def test_score_cli_mixed_sizes_and_too_small_image(tmp_path, capsys):
    """Images of different sizes share a batch; one too small for NIQE fails alone, the rest are scored."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, size in (("a.png", 128), ("b.png", 160), ("c.png", 128), ("tiny.png", 48)):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / name)
    out = tmp_path / "m.csv"
    rc = main(["score", str(folder), "--metrics", "niqe,piqe", "-o", str(out), "--no-hist", "--batch-size", "4"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "tiny.png" in err and "96x96" in err
    assert sorted(r["imagename"] for r in _read(out)) == ["a.png", "b.png", "c.png"]
