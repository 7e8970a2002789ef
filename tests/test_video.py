"""Video restoration (iqpfr.video): stream integrity (frame count, pts, audio packets byte-identical,
VFR, rotation, colour range), temporary file then rename, no overwrite, part selection, tracking and
temporal blending, content sniffing. Clips are made here: the package's sample photo panned and zoomed
at 160x120, 1 s; the network is a randomly initialised gfpgan-tiny (64-px faces, the fastest tiny preset)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av", minversion="18", reason="needs PyAV >= 18 (pip install 'iqpfr[video]')")
pytest.importorskip("dlib", reason="needs dlib for face detection (pip install 'iqpfr[face]')")

from iqpfr.video import VideoOptions  # noqa: E402
from iqpfr.video.io import VideoError, is_video_file, sniff_container  # noqa: E402
from iqpfr.video.synth import pan_zoom_frames, write_clip  # noqa: E402
from iqpfr.video.tracking import FaceTracker, TemporalBlender, TrackingOptions  # noqa: E402

ASTRONAUT = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
FACE = dict(centre=(0.43, 0.3), zoom=(1.3, 1.8), pan=0.1)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(ASTRONAUT).convert("RGB"))


@pytest.fixture(scope="module")
def restorer():
    from iqpfr import FaceRestorer

    return FaceRestorer.from_pretrained(model="gfpgan-tiny", random_init=True, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photo) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_clip(path, pan_zoom_frames(photo, (160, 120), 25, **FACE), fps=25, audio=True)
    return path


def frames_of(path: Path) -> list:
    with av.open(str(path)) as container:
        return [(f.pts * f.time_base, f.rotation, f.color_range) for f in container.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def test_stream_integrity_and_tracks(restorer, clip, tmp_path):
    out = tmp_path / "out.mp4"
    seen = []
    result = restorer.restore_video(clip, out, fidelity=0.5, on_frame=lambda i, f, recs: seen.append(
        [r.index for r in recs]))
    assert out.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    src, dst = frames_of(clip), frames_of(out)
    assert len(dst) == len(src) == 25 == result.frames
    assert [t for t, _, _ in dst] == [t for t, _, _ in src]  # every frame's timestamp kept
    assert audio_packets(out) == audio_packets(clip) and len(audio_packets(clip)) > 5
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 25
        assert (stream.width, stream.height) == (160, 120)
    # one face, tracked with one id over every frame; detection on a subset of frames
    assert [t["id"] for t in result.tracks] == [0] and result.tracks[0]["frames"] == 25
    assert seen == [[0]] * 25
    assert result.detections < 25 and result.refinements > 0
    report = result.to_dict()
    assert report["tracks"][0]["fidelity"] == 0.5 and {"decode", "detect", "model", "encode"} <= set(report["timings"])
    # the faces changed, the rest of the frame did not (up to the re-encoding)
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        x = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(float)
        y = next(b.decode(video=0)).to_ndarray(format="rgb24").astype(float)
    assert np.abs(x - y)[:, :20].mean() < 6 and np.abs(x - y).max() > 40


def test_variable_frame_rate_rotation_and_range_kept(restorer, photo, tmp_path):
    frames = list(pan_zoom_frames(photo, (160, 120), 18, **FACE))
    vfr = tmp_path / "vfr.mkv"
    written = write_clip(vfr, frames, fps=24, audio=False, vfr=True)
    result = restorer.restore_video(vfr, tmp_path / "vfr_out.mkv", fidelity=0.5)
    src, dst = frames_of(vfr), frames_of(tmp_path / "vfr_out.mkv")
    steps = {round(float(b[0] - a[0]), 4) for a, b in zip(src, src[1:])}
    assert len(steps) == 3 and len(written["pts"]) == 18  # really variable
    assert [t for t, _, _ in dst] == [t for t, _, _ in src] and result.frames == 18

    rotated = tmp_path / "rotated.mp4"
    write_clip(rotated, frames[:10], fps=24, audio=True, rotation=90, color_range=2)
    result = restorer.restore_video(rotated, tmp_path / "rotated_out.mp4", fidelity=0.5)
    src, dst = frames_of(rotated), frames_of(tmp_path / "rotated_out.mp4")
    assert {r for _, r, _ in src} == {r for _, r, _ in dst} == {90}
    assert {c for _, _, c in dst} == {2}  # full range stays full range
    assert len(dst) == 10 and audio_packets(rotated) == audio_packets(tmp_path / "rotated_out.mp4")
    with av.open(str(tmp_path / "rotated_out.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (120, 160)  # the coded (sideways) size is kept
    # the face is found only in the upright frame: it was detected, so frames were turned upright
    assert result.tracks and result.tracks[0]["frames"] == 10


def test_part_selection(restorer, clip, tmp_path):
    result = restorer.restore_video(clip, tmp_path / "five.mp4", fidelity=0.5, video_options=VideoOptions(max_frames=5))
    assert result.frames == 5 and len(frames_of(tmp_path / "five.mp4")) == 5
    result = restorer.restore_video(clip, tmp_path / "part.mp4", fidelity=0.5,
                                    video_options=VideoOptions(start=0.4, duration=0.4))
    times = [float(t) for t, _, _ in frames_of(tmp_path / "part.mp4")]
    assert result.frames == 10 and abs(times[0]) < 1e-6 and times[-1] == pytest.approx(0.36)
    audio = audio_packets(tmp_path / "part.mp4")
    assert 0 < len(audio) < len(audio_packets(clip))
    assert all(p in audio_packets(clip) for p in audio)  # a subset, each packet unchanged


def test_failure_leaves_nothing_and_no_overwrite(restorer, clip, tmp_path):
    target = tmp_path / "out.mp4"

    def boom(index, frame, records):
        if index == 12:
            raise KeyboardInterrupt  # an interrupted run

    with pytest.raises(KeyboardInterrupt):
        restorer.restore_video(clip, target, fidelity=0.5, on_frame=boom)
    assert list(tmp_path.iterdir()) == []  # no half file, no temporary left behind
    target.write_bytes(b"earlier result")
    with pytest.raises(FileExistsError):
        restorer.restore_video(clip, target, fidelity=0.5)
    assert target.read_bytes() == b"earlier result"
    restorer.restore_video(clip, target, fidelity=0.5, video_options=VideoOptions(overwrite=True, max_frames=3))
    assert len(frames_of(target)) == 3


def test_independent_mode_detects_every_frame(restorer, clip, tmp_path):
    result = restorer.restore_video(clip, tmp_path / "off.mp4", tracking=False,
                                    video_options=VideoOptions(max_frames=8))
    assert result.frames == 8 and result.detections == 8 and result.refinements == 0
    assert result.tracks and result.tracks[0]["frames"] == 8 and "input_niqe" in result.tracks[0]


# ---------------------------------------------------------------------------------- unit level


class _FakeDetector:
    """A face moving right 2 px a frame with landmark jitter; missing on some frames."""

    name = "fake"

    def __init__(self, missing=()):
        self.frame, self.missing = 0, set(missing)
        self.rng = np.random.default_rng(0)

    def points(self):
        base = np.array([[40.0, 50], [70, 50], [55, 65], [44, 80], [66, 80]]) + [2.0 * self.frame, 0]
        return base + self.rng.normal(0, 1.5, base.shape)

    def detect(self, rgb):
        from iqpfr.face.detect import DetectedFace

        if self.frame in self.missing:
            return []
        points = self.points()
        return [DetectedFace(np.r_[points.min(0) - 15, points.max(0) + 15], 1.0, points)]


def test_tracker_smooths_interpolates_and_keeps_ids():
    detector = _FakeDetector(missing={10, 11, 12})
    options = TrackingOptions(detect_every=1, smooth_sigma=1.5, max_gap=4)
    tracker = FaceTracker(detector, options)
    rgb = np.zeros((120, 200, 3), np.uint8)
    emitted = {}
    count = 30
    for index in range(count):
        detector.frame = index
        tracker.observe(index, rgb)
        ready = index - options.lookahead
        if ready >= 0:
            emitted[ready] = tracker.faces_at(ready)
            tracker.prune(ready)
    for ready in range(count - options.lookahead, count):
        emitted[ready] = tracker.faces_at(ready)
    assert all(len(faces) == 1 and faces[0][0].id == 0 for faces in emitted.values())  # the gap is bridged
    truth = lambda i: np.array([[40.0, 50], [70, 50], [55, 65], [44, 80], [66, 80]]) + [2.0 * i, 0]  # noqa: E731
    error = np.mean([np.abs(emitted[i][0][1] - truth(i)).mean() for i in range(3, count - 3)])
    assert error < 0.8  # raw jitter: mean |N(0, 1.5)| = 1.2
    assert np.abs(emitted[11][0][1] - truth(11)).max() < 3.0  # interpolated across the missed frames
    assert [t.id for t in tracker.all_tracks()] == [0]


def test_temporal_blender_damps_flicker_not_motion():
    rng = np.random.default_rng(0)
    still = np.full((64, 64, 3), 0.5, np.float32)
    blender = TemporalBlender(0.6, 0.05)
    outputs = [blender(i, 0, still, np.clip(still + rng.normal(0, 0.05, still.shape), 0, 1).astype(np.float32))
               for i in range(20)]
    change = np.mean([np.abs(a - b).mean() for a, b in zip(outputs[1:], outputs[:-1])])
    assert change < 0.7 * np.mean(np.abs(rng.normal(0, 0.05, (10000,)) - rng.normal(0, 0.05, (10000,))))
    moved = np.roll(still, 8, axis=1)
    moved[:, :32] = 0.0  # a large change of the input: the new restoration is used as it is
    fresh = np.full_like(still, 0.9)
    assert np.allclose(blender(20, 0, moved, fresh)[:, 8:24], 0.9, atol=1e-3)


def test_sniffing(tmp_path, clip):
    assert sniff_container(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 20) == "mp4"
    assert sniff_container(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20) is None  # a HEIF photo
    assert sniff_container(b"\x1aE\xdf\xa3" + b"\x00" * 20) == "matroska"
    assert sniff_container(b"RIFF\x00\x00\x00\x00AVI LIST") == "avi"
    assert sniff_container(b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None
    renamed = tmp_path / "holiday.bin"
    renamed.write_bytes(clip.read_bytes())
    assert is_video_file(renamed) and not is_video_file(ASTRONAUT)
    with pytest.raises(VideoError, match="no such file"):
        from iqpfr.video import probe_video

        probe_video(tmp_path / "missing.mp4")


def test_codec_choice(restorer, photo, tmp_path):
    frames = list(pan_zoom_frames(photo, (160, 120), 4, **FACE))
    source = tmp_path / "old.avi"
    write_clip(source, frames, fps=10, audio=False, codec="mpeg4")
    restorer.restore_video(source, tmp_path / "same.avi", fidelity=0.5, video_options=VideoOptions(codec="same"))
    restorer.restore_video(source, tmp_path / "default.webm", fidelity=0.5)  # WebM cannot hold H.264
    for name, codec in (("same.avi", "mpeg4"), ("default.webm", "vp9")):
        with av.open(str(tmp_path / name)) as container:
            assert container.streams.video[0].codec_context.name == codec
            assert sum(1 for _ in container.decode(video=0)) == 4


def subtitle_packets(path: Path) -> list[tuple]:
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        return [(bytes(p), float(p.pts * p.time_base), float(p.duration * p.time_base))
                for p in container.demux(stream) if p.size]


def test_subtitle_stream_copied_packet_for_packet(restorer, photo, tmp_path):
    lines = ["first line", "second, with a comma", "third {\\i1}italic{\\i0}"]
    source = tmp_path / "subtitled.mkv"
    written = write_clip(source, pan_zoom_frames(photo, (160, 120), 75, **FACE), fps=25, audio=True,
                         subtitles=lines)
    out = tmp_path / "subtitled_out.mkv"
    result = restorer.restore_video(source, out, fidelity=0.5)
    src, dst = subtitle_packets(source), subtitle_packets(out)
    assert [p for p, _, _ in src] == written["subtitles"] and len(src) == 3
    assert dst == src  # payloads, times and durations byte for byte
    with av.open(str(out)) as container:
        assert container.streams.subtitles[0].codec_context.name == "ssa"
    assert audio_packets(out) == audio_packets(source) and result.frames == 75
