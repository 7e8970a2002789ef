"""``iqpfr restore`` on videos: detection by content in a folder mixing photos and videos, the output
name and JSON report, skip/overwrite, and the bad-input corpus (truncated, corrupt, no video stream,
zero frames, unsupported codec, huge frames, missing file): one error line each naming the file, the
batch goes on, exit code 1, nothing overwritten."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av", minversion="18", reason="needs PyAV >= 18 (pip install 'iqpfr[video]')")
pytest.importorskip("dlib", reason="needs dlib for face detection (pip install 'iqpfr[face]')")

from iqpfr.cli import main  # noqa: E402
from iqpfr.video.synth import pan_zoom_frames, write_clip  # noqa: E402

ASTRONAUT = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
TINY = ["--model", "gfpgan-tiny", "--random-init", "--device", "cpu", "-w", "0.5", "-q"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_clip(path, pan_zoom_frames(photo, (160, 120), 8, centre=(0.43, 0.3), zoom=(1.3, 1.5), pan=0.05), fps=8)
    return path


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(["restore", *map(str, args)])
    return code, capsys.readouterr().err


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_folder_mixing_photos_and_videos(clip, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "photo.jpg")
    shutil.copy(clip, folder / "holiday.mp4")
    shutil.copy(clip, folder / "from_phone")  # no suffix: found by its first bytes
    (folder / "notes.txt").write_text("not media")
    out = tmp_path / "out"
    code, err = run_cli(capsys, folder, "-o", out, *TINY, "--json", tmp_path / "report.json")
    assert code == 0, err
    finals = sorted(p.name for p in (out / "final_results").iterdir())
    assert finals == ["from_phone.mp4", "holiday.mp4", "photo.jpg"]  # the input's name, never *.png.mp4
    report = json.loads((tmp_path / "report.json").read_text())
    by_name = {Path(i["input"]).name: i for i in report["images"]}
    assert by_name["notes.txt"]["status"] == "ignored" and by_name["photo.jpg"]["status"] == "ok"
    video = by_name["holiday.mp4"]
    assert video["kind"] == "video" and video["status"] == "ok" and video["video"]["frames"] == 8
    assert video["tracks"][0]["frames"] == 8 and video["tracks"][0]["id"] == 0
    assert {"decode", "model", "encode"} <= set(video["video"]["timings"])
    assert report["settings"]["video"]["tracking"] is True
    with av.open(str(out / "final_results" / "holiday.mp4")) as container:
        assert container.streams.video[0].frames == 8 and len(container.streams.audio) == 1

    # a second run skips the existing outputs; --overwrite replaces them
    before = _digest(out)
    code, err = run_cli(capsys, folder / "holiday.mp4", "-o", out, *TINY)
    assert code == 0 and _digest(out) == before
    code, err = run_cli(capsys, folder / "holiday.mp4", "-o", out, *TINY, "--overwrite", "--max-frames", "3")
    assert code == 0, err
    with av.open(str(out / "final_results" / "holiday.mp4")) as container:
        assert container.streams.video[0].frames == 3


def _no_video_stream(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def _zero_frames(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()


def test_bad_inputs_one_line_each(clip, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    data = clip.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    _no_video_stream(folder / "sound_only.m4a")
    _zero_frames(folder / "empty.avi")
    (folder / "unknown_codec.mp4").write_bytes(data.replace(b"avc1", b"zzzz"))
    (folder / "empty_file.mp4").write_bytes(b"")
    shutil.copy(clip, folder / "good.mp4")
    out = tmp_path / "out"
    (out / "final_results").mkdir(parents=True)
    (out / "final_results" / "corrupt.mp4").write_bytes(b"an earlier output")
    before = _digest(folder)
    code, err = run_cli(capsys, folder, tmp_path / "missing.mp4", "-o", out, *TINY, "--overwrite")
    assert code == 1
    lines = [line for line in err.splitlines() if "error:" in line]
    expected = {
        "truncated.mp4": "not a readable video",
        "corrupt.mp4": "not a readable video",
        "sound_only.m4a": "no video stream (audio only)",
        "empty.avi": "no video frames",
        "unknown_codec.mp4": "unsupported video codec",
        "empty_file.mp4": "empty file",
        "missing.mp4": "no such file",
    }
    for name, reason in expected.items():
        matching = [line for line in lines if f"{name}:" in line]
        assert len(matching) == 1 and reason in matching[0], (name, lines)
    assert len(lines) == len(expected)
    assert (out / "final_results" / "good.mp4").is_file()  # the batch went on
    assert (out / "final_results" / "corrupt.mp4").read_bytes() == b"an earlier output"  # a failure replaces nothing
    assert sorted(p.name for p in (out / "final_results").iterdir()) == ["corrupt.mp4", "good.mp4"]  # no temporaries
    assert _digest(folder) == before  # inputs untouched

    # a huge frame (here: above a 0.001 MP limit) and a file cut short behind a leading index
    code, err = run_cli(capsys, clip, "-o", tmp_path / "out2", *TINY, "--max-pixels", "0.001")
    assert code == 1 and err.count("error:") == 1 and "clip.mp4: frame size 160x120 is above the limit" in err
    with av.open(str(tmp_path / "indexed.mp4"), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(1)
        for i in range(16):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = (tmp_path / "indexed.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    code, err = run_cli(capsys, tmp_path / "cut.mp4", "-o", tmp_path / "out3", *TINY)
    assert code == 1 and err.count("error:") == 1 and "cut.mp4: truncated: decoded" in err
    assert not (tmp_path / "out3" / "final_results" / "cut.mp4").exists()
