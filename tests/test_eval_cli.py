"""``iqpfr eval`` and ``iqpfr make-testset``: pairing, resume, failures, summaries, protocol files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from iqpfr.cli import main
from iqpfr.eval.metrics import psnr, ssim
from iqpfr.io import read_rgb, write_rgb


def _rows(path):
    with open(path, newline="") as fh:
        return {r["file"]: r for r in csv.DictReader(fh)}


@pytest.fixture
def pairs(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for i in range(5):
        gt = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        pred = np.clip(gt.astype(int) + rng.integers(-20, 20, gt.shape), 0, 255).astype(np.uint8)
        write_rgb(gt_dir / f"img{i}.png", gt)
        write_rgb(pred_dir / f"img{i}.png", pred)
    return gt_dir, pred_dir


def test_eval_writes_csv_summary_and_resumes(pairs, tmp_path, capsys):
    gt_dir, pred_dir = pairs
    out = tmp_path / "res" / "results.csv"
    rc = main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr,ssim", "-o", str(out),
               "--batch-size", "2"])
    assert rc == 0
    rows = _rows(out)
    assert sorted(rows) == [f"img{i}.png" for i in range(5)]
    for name, row in rows.items():
        p, g = read_rgb(pred_dir / name), read_rgb(gt_dir / name)
        assert abs(float(row["psnr"]) - psnr(p, g)) < 1e-5 and abs(float(row["ssim"]) - ssim(p, g)) < 1e-6
    summary = json.loads(out.with_name("results.summary.json").read_text())
    assert summary["n_images"] == 5 and summary["protocol"]["ssim"]["kind"] == "fr"
    assert abs(summary["metrics"]["psnr"]["mean"] - np.mean([float(r["psnr"]) for r in rows.values()])) < 1e-6
    assert "numpy" in summary["versions"] and summary["config"]["metrics"] == ["psnr", "ssim"]
    assert "| psnr |" in out.with_name("results.summary.md").read_text()
    assert (tmp_path / "res" / "results_plots" / "distributions.png").stat().st_size > 1000

    # resume: complete rows are kept as they are, missing rows and missing columns are computed
    text = out.read_text().replace(rows["img0.png"]["psnr"], "99.5", 1)
    lines = [ln for ln in text.splitlines() if not ln.startswith("img3.png")]
    out.write_text("\n".join(lines) + "\n")
    assert main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr,ssim,psnr_y",
                 "-o", str(out)]) == 0
    again = _rows(out)
    assert again["img0.png"]["psnr"] == "99.5"  # not recomputed
    assert abs(float(again["img3.png"]["psnr"]) - float(rows["img3.png"]["psnr"])) < 1e-6
    assert all(again[k]["psnr_y"] for k in again)


def test_eval_recomputes_rows_whose_files_changed(pairs, tmp_path):
    """A CSV reused for another prediction folder (same names) or for new restorations is not stale."""
    gt_dir, pred_dir = pairs
    out = tmp_path / "results.csv"
    args = ["eval", "--gt", str(gt_dir), "--metrics", "psnr", "-o", str(out), "--no-plots"]
    assert main([*args, "--pred", str(pred_dir)]) == 0
    first = _rows(out)
    assert all(len(row["signature"]) == 20 for row in first.values())

    other = tmp_path / "other"
    for name in first:
        write_rgb(other / name, read_rgb(gt_dir / name))  # perfect predictions under the same names
    assert main([*args, "--pred", str(other)]) == 0
    assert all(row["psnr"] == "inf" for row in _rows(out).values())

    write_rgb(other / "img2.png", read_rgb(pred_dir / "img2.png"), overwrite=True)  # restored again
    assert main([*args, "--pred", str(other)]) == 0
    again = _rows(out)
    assert again["img2.png"]["psnr"] == first["img2.png"]["psnr"] and again["img0.png"]["psnr"] == "inf"


def test_eval_reports_and_skips_bad_files(pairs, tmp_path, capsys):
    gt_dir, pred_dir = pairs
    (pred_dir / "img1.png").write_bytes(b"\x89PNG truncated")
    write_rgb(pred_dir / "orphan.png", np.zeros((32, 32, 3), np.uint8))
    write_rgb(pred_dir / "img2.png", np.zeros((16, 16, 3), np.uint8), overwrite=True)
    out = tmp_path / "r.csv"
    rc = main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr", "-o", str(out), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "img1.png" in err and "orphan" in err and "--resize-to-gt" in err
    assert sorted(_rows(out)) == ["img0.png", "img3.png", "img4.png"]
    rc = main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr", "-o", str(out),
               "--no-plots", "--resize-to-gt"])
    assert "img2.png" in _rows(out)
    # per-face outputs named like CodeFormer's (<name>_00.png) pair with --strip-suffix
    (pred_dir / "orphan.png").rename(pred_dir / "img0_00.png")
    rc = main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr", "-o", str(out),
               "--no-plots", "--resize-to-gt", "--strip-suffix", "_00"])
    assert "img0_00.png" in _rows(out)
    # an image a metric cannot handle (too small for the SSIM window) costs only its own row
    write_rgb(pred_dir / "tiny.png", np.zeros((8, 8, 3), np.uint8))
    write_rgb(gt_dir / "tiny.png", np.zeros((8, 8, 3), np.uint8))
    rc = main(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "psnr,ssim", "-o",
               str(tmp_path / "t.csv"), "--no-plots", "--resize-to-gt", "--batch-size", "16"])
    rows = _rows(tmp_path / "t.csv")
    assert rc == 1 and rows["tiny.png"]["ssim"] == "" and rows["img3.png"]["ssim"] != ""
    assert main(["eval", "--pred", str(tmp_path / "nope"), "-o", str(out)]) == 2
    assert main(["eval", "--pred", str(pred_dir), "--metrics", "psnr", "-o", str(out)]) == 2  # psnr needs --gt


class _Brightness(torch.nn.Module):
    """A stand-in no-reference scorer: mean brightness."""

    name = "brightness"
    higher_better = True

    def score(self, images):
        return images.mean(dim=(1, 2, 3))


def test_eval_uses_any_quality_scorer_by_name(pairs, tmp_path, monkeypatch):
    import iqpfr.quality.registry as registry

    gt_dir, pred_dir = pairs
    monkeypatch.setattr(registry, "create_scorer", lambda name, **kw: _Brightness())
    out = tmp_path / "nr.csv"
    assert main(["eval", "--pred", str(pred_dir), "--metrics", "brightness", "-o", str(out), "--no-plots"]) == 0
    rows = _rows(out)
    expected = read_rgb(pred_dir / "img0.png").mean() / 255
    assert abs(float(rows["img0.png"]["brightness"]) - expected) < 1e-5


def test_make_testset_celeba_protocol(tmp_path):
    rng = np.random.default_rng(1)
    hq = tmp_path / "hq"
    for i in range(4):
        write_rgb(hq / f"f{i}.png", rng.integers(0, 256, (80, 80, 3), dtype=np.uint8))
    out = tmp_path / "set"
    assert main(["make-testset", str(hq), "-o", str(out), "--protocol", "celeba-test", "--seed", "0",
                 "--size", "64"]) == 0
    assert sorted(p.name for p in (out / "lq").iterdir()) == [f"f{i}.png" for i in range(4)]
    assert read_rgb(out / "gt" / "f0.png").shape == (64, 64, 3) == read_rgb(out / "lq" / "f0.png").shape
    scales = sorted(float(r["scale"]) for r in _rows(out / "params.csv").values())
    assert scales == [8.0, 8.0, 16.0, 16.0]
    assert json.loads((out / "protocol.json").read_text())["protocol"] == "celeba-test"
    before = (out / "lq" / "f2.png").read_bytes()
    (out / "lq" / "f2.png").unlink()
    assert main(["make-testset", str(hq), "-o", str(out), "--size", "64"]) == 0
    assert (out / "lq" / "f2.png").read_bytes() == before  # reproducible from the seed
    # the pairs evaluate directly
    assert main(["eval", "--pred", str(out / "lq"), "--gt", str(out / "gt"), "--metrics", "psnr",
                 "-o", str(tmp_path / "e.csv"), "--no-plots"]) == 0


def test_eval_sweep_restores_and_tabulates(tmp_path, capsys):
    rng = np.random.default_rng(2)
    lq, gt = tmp_path / "lq", tmp_path / "gt"
    for i in range(3):
        write_rgb(gt / f"a{i}.png", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
        write_rgb(lq / f"a{i}.png", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    out = tmp_path / "sweep"
    args = ["eval-sweep", "--lq", str(lq), "--gt", str(gt), "-o", str(out), "--model", "iqpfr-tiny",
            "--random-init", "--w", "0,1", "--quality", "0.9", "--metrics", "psnr,ssim", "--no-plots"]
    assert main(args) == 0
    table = _rows(out / "sweep.csv")
    assert sorted(table) == ["w0_q0.9", "w1_q0.9"]
    assert all(int(r["n"]) == 3 and float(r["psnr"]) > 0 for r in table.values())
    restored = read_rgb(out / "w1_q0.9" / "a0.png")
    assert restored.shape == (48, 48, 3)  # resized back to the GT size
    mtime = (out / "w1_q0.9" / "a0.png").stat().st_mtime_ns
    assert main(args) == 0  # resumes: existing restorations are kept
    assert (out / "w1_q0.9" / "a0.png").stat().st_mtime_ns == mtime

    # another model's run into the same folder would reuse these restorations as its own: refused
    other = [a if a != "iqpfr-tiny" else "codeformer-tiny" for a in args]
    assert main(other) == 2
    assert "holds the results of another run (differs in: model)" in capsys.readouterr().err
    assert (out / "w1_q0.9" / "a0.png").stat().st_mtime_ns == mtime


def test_eval_pairs_restore_per_face_names_with_their_gt(pairs, tmp_path, capsys):
    """README's command: restored_faces/NAME_00.png pairs with gt/NAME.png without --strip-suffix."""
    pred_dir, gt_dir = pairs
    faces = tmp_path / "restored_faces"
    faces.mkdir()
    for p in sorted(pred_dir.glob("*.png")):
        (faces / f"{p.stem}_00.png").write_bytes(p.read_bytes())
    (faces / "stranger_00.png").write_bytes(next(pred_dir.glob("*.png")).read_bytes())
    out = tmp_path / "r.csv"
    rc = main(["eval", "--pred", str(faces), "--gt", str(gt_dir), "--metrics", "psnr", "-o", str(out), "--no-plots"])
    err = capsys.readouterr().err
    rows = _rows(out)
    assert len(rows) == len(list(pred_dir.glob("*.png")))
    assert "paired with the GT image NAME" in err
    # the one without a GT says what to do, in one line
    lines = [line for line in err.splitlines() if "stranger_00.png" in line]
    assert len(lines) == 1 and "no GT image named stranger_00" in lines[0] and "--strip-suffix" in lines[0]
    assert rc == 1
