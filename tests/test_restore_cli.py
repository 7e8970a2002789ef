"""``iqpfr restore``: output layout, JSON report, skip/overwrite, dry run, no-face copy-through and
the bad-input corpus (one line per bad file, the batch goes on, nothing overwritten or modified)."""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import shared_path
from iqpfr.cli import main

pytest.importorskip("dlib")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # on a loaded 2-core CI machine one torch thread beats two contending ones by a wide margin
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

ASTRONAUT = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
TINY = ["--model", "codeformer-tiny", "--random-init", "--device", "cpu"]


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["restore", *map(str, args)])
    return code, capsys.readouterr().err


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _noise(path: Path, size=(80, 60)) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_layout_and_json_report(tmp_path, capsys):
    photo = tmp_path / "in" / "Astro.JPG"
    photo.parent.mkdir()
    shutil.copy(ASTRONAUT, photo)
    out = tmp_path / "out"
    code, err = run_cli(capsys, photo, "-o", out, *TINY, "--save", "final,faces,crops", "--suffix", "v1",
                        "-s", "2", "--json", tmp_path / "report.json", "-w", "0.3")
    assert code == 0, err
    assert "RANDOMLY INITIALISED" in err
    assert (out / "final_results" / "Astro_v1.jpg").is_file()
    assert (out / "cropped_faces" / "Astro_00.png").is_file()
    assert (out / "restored_faces" / "Astro_00_v1.png").is_file()
    assert Image.open(out / "final_results" / "Astro_v1.jpg").size == (1024, 1024)
    assert Image.open(out / "restored_faces" / "Astro_00_v1.png").size == (64, 64)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["fidelity"] == 0.3 and report["settings"]["random_init"] is True
    (image,) = report["images"]
    assert image["status"] == "ok" and image["output"].endswith("Astro_v1.jpg")
    (face,) = image["faces"]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and len(face["landmarks68"]) == 68
    assert face["score"] > 0 and {"align", "model", "paste"} <= set(face["timings"])
    assert {"read", "detect", "model", "write"} <= set(image["timings"])


def test_no_face_photo_is_copied_through(tmp_path, capsys):
    noise = _noise(tmp_path / "noise.png")
    code, err = run_cli(capsys, noise, "-o", tmp_path / "out", *TINY)
    assert code == 0 and "no face found" in err
    copied = tmp_path / "out" / "final_results" / "noise.png"
    assert copied.read_bytes() == noise.read_bytes()
    code, err = run_cli(capsys, noise, "-o", tmp_path / "up", *TINY, "-s", "2", "--ext", "webp")
    assert code == 0
    assert Image.open(tmp_path / "up" / "final_results" / "noise.webp").size == (160, 120)


def test_fidelity_sweep_writes_one_result_per_value(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(capsys, ASTRONAUT, "-o", out, *TINY, "-w", "0,1", "--save", "final,faces,crops",
                        "--json", tmp_path / "r.json")
    assert code == 0, err
    assert sorted(os.listdir(out / "final_results")) == ["astronaut_degraded_w0.jpg", "astronaut_degraded_w1.jpg"]
    assert os.listdir(out / "cropped_faces") == ["astronaut_degraded_00.png"]
    faces = [np.asarray(Image.open(out / "restored_faces" / f"astronaut_degraded_00_w{w}.png"), np.int16) for w in (0, 1)]
    assert np.abs(faces[0] - faces[1]).mean() > 1  # w reaches the network
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["fidelity"] == [0.0, 1.0]
    assert [item["fidelity"] for item in report["images"]] == [0.0, 1.0]
    assert run_cli(capsys, ASTRONAUT, "-o", out, "-w", "0.5,abc")[0] == 2


def test_face_filters_from_the_command_line(tmp_path, capsys):
    code, err = run_cli(capsys, ASTRONAUT, "-o", tmp_path / "out", *TINY, "--min-face-size", "400", "--json",
                        tmp_path / "r.json")
    assert code == 0 and "smaller than 400 px skipped" in err and "no face found" in err
    assert (tmp_path / "out" / "final_results" / ASTRONAUT.name).read_bytes() == ASTRONAUT.read_bytes()
    assert json.loads((tmp_path / "r.json").read_text())["images"][0]["status"] == "no_face"
    code, err = run_cli(capsys, ASTRONAUT, "-o", tmp_path / "one", *TINY, "--largest-face", "--only-center-face",
                        "--face-index", "0", "--save", "faces")
    assert code == 0 and os.listdir(tmp_path / "one" / "restored_faces") == ["astronaut_degraded_00.png"]


def test_skip_existing_then_overwrite(tmp_path, capsys):
    noise = _noise(tmp_path / "a.png")
    out = tmp_path / "out"
    target = out / "final_results" / "a.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"earlier result")
    code, err = run_cli(capsys, noise, "-o", out, *TINY)
    assert code == 0 and "1 skipped" in err and target.read_bytes() == b"earlier result"
    code, err = run_cli(capsys, noise, "-o", out, *TINY, "--overwrite")
    assert code == 0 and target.read_bytes() == noise.read_bytes()


def test_outputs_inside_a_scanned_folder_are_not_inputs(tmp_path, capsys):
    _noise(tmp_path / "a.png")
    assert run_cli(capsys, tmp_path, "-r", "-o", tmp_path / "res", *TINY)[0] == 0
    code, err = run_cli(capsys, tmp_path, "-r", "-o", tmp_path / "res", *TINY)
    assert code == 0 and "1 skipped" in err and not (tmp_path / "res" / "final_results" / "res").exists()


def test_dry_run_writes_nothing(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    _noise(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "sub").mkdir()
    _noise(tmp_path / "in" / "sub" / "b.TIFF")
    code = main(["restore", str(tmp_path / "in"), "-r", "-o", str(tmp_path / "out"), "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0 and not (tmp_path / "out").exists()
    assert "final_results/a.png" in printed and "final_results/sub/b.tiff" in printed


def test_glob_inputs_and_missing_default_model(tmp_path, capsys):
    from iqpfr.restorer import embedded_weights_path

    _noise(tmp_path / "x1.png")
    _noise(tmp_path / "x2.jpg")
    if embedded_weights_path().is_file():
        pytest.skip("the default model is shipped in this build")
    code, err = run_cli(capsys, str(tmp_path / "x*"), "-o", tmp_path / "out")
    assert code == 2 and "--weights" in err and len(err.strip().splitlines()) == 1


def test_aligned_inputs(tmp_path, capsys):
    crop = tmp_path / "face.png"
    Image.open(ASTRONAUT).crop((150, 40, 310, 200)).save(crop)
    from iqpfr.models.factory import create_model
    from iqpfr.weights.checkpoint import save_model

    weights = save_model(create_model("gfpgan-tiny"), tmp_path / "gfpgan-tiny.safetensors")
    code, err = run_cli(capsys, crop, "-o", tmp_path / "out", "--weights", weights, "--has_aligned")
    assert code == 0, err
    assert "gfpgan-tiny.safetensors" in err
    assert Image.open(tmp_path / "out" / "restored_faces" / "face_00.png").size == (64, 64)
    assert Image.open(tmp_path / "out" / "final_results" / "face.png").size == (160, 160)


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()[:-200]


def _bomb_png(width=60_000, height=60_000) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_input_corpus(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    astro = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    small = cv2.resize(astro, (256, 256), interpolation=cv2.INTER_AREA)
    # files that must fail, each with its reason
    (src / "truncated.png").write_bytes(_truncated_png())
    (src / "zero.jpg").write_bytes(b"")
    (src / "text.webp").write_bytes(b"plain text, not an image\n")
    (src / "bomb.png").write_bytes(_bomb_png())
    locked = src / "locked.jpg"
    shutil.copy(ASTRONAUT, locked)
    # unusual but valid files that must be restored with their format kept
    Image.fromarray(small).convert("CMYK").save(src / "cmyk.jpg")
    Image.fromarray(small).convert("P").save(src / "palette.png")
    cv2.imwrite(str(src / "deep16.png"), (small[:, :, ::-1].astype(np.uint16) * 257) | 1)
    Image.fromarray(np.dstack([small, np.full(small.shape[:2], 77, np.uint8)])).save(src / "alpha.png")
    frames = [Image.fromarray(small), Image.fromarray(255 - small)]
    frames[0].save(src / "anim.webp", save_all=True, append_images=frames[1:])
    shutil.copy(ASTRONAUT, src / "good.jpg")
    before = _digest(src)

    if os.geteuid() == 0:  # root reads through chmod 000: simulate the refusal the OS would give
        real_read_bytes = Path.read_bytes

        def guarded(self):
            if self.name == "locked.jpg":
                raise PermissionError(13, "Permission denied", str(self))
            return real_read_bytes(self)

        monkeypatch.setattr(Path, "read_bytes", guarded)
    else:
        locked.chmod(0)

    out = tmp_path / "out"
    earlier = out / "final_results" / "good.jpg"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier result")
    code, err = run_cli(capsys, src, tmp_path / "missing.png", "-o", out, *TINY, "--json", out / "report.json")
    if os.geteuid() != 0:
        locked.chmod(0o644)
    monkeypatch.undo()

    assert code == 1
    errors = [line for line in err.splitlines() if "error:" in line]
    expected = {
        "truncated.png": "truncated",
        "zero.jpg": "empty file",
        "text.webp": "not an image",
        "bomb.png": "decompression-bomb",
        "locked.jpg": "permission denied",
        "missing.png": "no such file",
    }
    for name, reason in expected.items():
        lines = [line for line in errors if name in line]
        assert len(lines) == 1 and reason in lines[0], (name, errors)
    assert len(errors) == len(expected)
    assert any("cmyk.jpg" in line and "CMYK" in line for line in err.splitlines())
    assert any("anim.webp" in line and "first frame" in line for line in err.splitlines())

    final = out / "final_results"
    assert earlier.read_bytes() == b"an earlier result"  # skipped, not overwritten
    deep = cv2.imread(str(final / "deep16.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16
    alpha = np.asarray(Image.open(final / "alpha.png"))
    assert alpha.shape[2] == 4 and (alpha[:, :, 3] == 77).all()
    for name in ("cmyk.jpg", "palette.png", "anim.webp"):
        assert (final / name).is_file()
    assert not any(name in os.listdir(final) for name in expected)
    assert _digest(src) == before  # inputs never modified
    report = json.loads((out / "report.json").read_text())
    status = {Path(item["input"]).name: item["status"] for item in report["images"]}
    assert status["good.jpg"] == "skipped" and status["deep16.png"] == "ok" and status["zero.jpg"] == "failed"


def test_two_codeformer_photos(tmp_path, capsys):
    folder = shared_path("data", "codeformer_whole_imgs")
    inputs = [folder / "01.jpg", folder / "04.jpg"]
    code, err = run_cli(capsys, *inputs, "-o", tmp_path / "out", *TINY, "--save", "final,faces", "--batch-size", "3",
                        "--json", tmp_path / "r.json")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out" / "final_results")) == ["01.jpg", "04.jpg"]
    assert len(os.listdir(tmp_path / "out" / "restored_faces")) == 5
    report = json.loads((tmp_path / "r.json").read_text())
    assert [len(item["faces"]) for item in report["images"]] == [4, 1]


@pytest.mark.slow
def test_every_codeformer_photo(tmp_path, capsys):
    folder = shared_path("data", "codeformer_whole_imgs")
    code, err = run_cli(capsys, folder, "-o", tmp_path / "out", *TINY, "--save", "final,faces,crops", "-s", "2",
                        "--json", tmp_path / "r.json")
    assert code == 0, err
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    assert sorted(os.listdir(tmp_path / "out" / "final_results")) == names
    report = json.loads((tmp_path / "r.json").read_text())
    assert sum(len(item.get("faces", [])) for item in report["images"]) == 17
    assert [Path(i["input"]).name for i in report["images"] if i["status"] == "ignored"] == ["SOURCE.md"]
    assert len(os.listdir(tmp_path / "out" / "restored_faces")) == 17
    for name in names:
        source = Image.open(folder / name)
        result = Image.open(tmp_path / "out" / "final_results" / name)
        assert result.size == (source.size[0] * 2, source.size[1] * 2) and result.mode == source.mode


def test_folder_scan_takes_gif_and_counts_other_files(tmp_path, capsys):
    """A GIF in a folder is restored from its first frame (with a note); a non-image file is listed
    as ignored; the summary accounts for every file of the folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    with Image.open(ASTRONAUT) as im:
        im.save(folder / "anim.gif", save_all=True, append_images=[im.rotate(10)], duration=100)
    (folder / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    code, err = run_cli(capsys, folder, "-o", out, *TINY, "--json", tmp_path / "r.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    status = {Path(i["input"]).name: i["status"] for i in report["images"]}
    assert status == {"anim.gif": "ok", "notes.txt": "ignored"}
    assert "1 not images (ignored)" in err and "only the first frame is used" in err
    assert (out / "final_results" / "anim.png").is_file()
