"""Video restoration: stream integrity, constant memory, flicker and speed (issue 20's numbers).

    OMP_NUM_THREADS=2 python benchmarks/video.py --threads 2          # ~15-25 min on a shared 2-core CPU

Inputs are made here (``iqpfr.video.synth``): the package's sample photo (or ``--photo``) panned and
zoomed at 1280x720, H.264 + a 440 Hz AAC tone, Gaussian noise (std 4) different in every frame so
the input flickers like a real sensor. The default model (the embedded iqpfr-128) restores them.

1. integrity: a ``--seconds``-s 25 fps clip (tracking on): frame count, every frame's pts, audio
   packets byte-identical to the input's.
2. memory: peak RSS of a fresh process restoring a 10-s and a 60-s clip (``--rss-fps`` frames/s,
   720p, tracking on), and its RSS sampled while the frames flow (first vs last quarter of the
   frames); the differences are the numbers to watch. ``--only-rss`` re-measures just this part.
3. flicker: per track, the mean absolute frame-to-frame change (0..255) of the face crop aligned by
   the track's own (tracking-on) affine, in the input, the tracking-on output and the tracking-off
   output, over the first ``--compare-frames`` frames.
4. speed: frames/s of the whole pipeline (decode .. encode) with tracking on and off on those frames.

Writes benchmarks/results/video_cpu.json.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "video_cpu.json"
SIZE = (1280, 720)
FACE = dict(centre=(0.43, 0.3), zoom=(1.3, 1.7), pan=0.1, noise=4.0)


def load_photo(path: str | None) -> np.ndarray:
    from PIL import Image

    source = path or str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg")
    return np.asarray(Image.open(source).convert("RGB"))


def make_clip(path: Path, photo: np.ndarray, seconds: float, fps: int) -> dict:
    from iqpfr.video.synth import pan_zoom_frames, write_clip

    frames = pan_zoom_frames(photo, SIZE, int(seconds * fps), **FACE)
    info = write_clip(path, frames, fps=fps, audio=True)
    return {"seconds": info["seconds"], "frames": info["frames"], "fps": fps, "size": list(SIZE)}


def stream_facts(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        audio = [bytes(p) for p in container.demux(audio=0) if p.size]
    with av.open(str(path)) as container:
        pts = [(f.pts * f.time_base) for f in container.decode(video=0)]
    return {"audio": audio, "pts": pts}


def _rss_mb() -> float:
    """The resident set size now (MB), from /proc (Linux); ru_maxrss elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(args) -> None:
    """Restore one clip in this fresh process and print its memory (MB) as JSON: the peak RSS of the
    process (ru_maxrss, loading included), the peak once the restorer is loaded, and the RSS sampled
    every 0.2 s while frames flow: its maximum over the first and over the last quarter of the frames
    (equal when memory does not grow with the length)."""
    import threading

    import torch

    torch.set_num_threads(args.threads)
    from iqpfr import FaceRestorer

    restorer = FaceRestorer.from_pretrained(device="cpu")
    loaded_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    import av

    with av.open(args.child[0]) as container:
        total = container.streams.video[0].frames
    written = [0]
    samples: list[tuple[int, float]] = []
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            samples.append((written[0], _rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = restorer.restore_video(args.child[0], args.child[1],
                                    on_frame=lambda i, f, r: written.__setitem__(0, i + 1))
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    quarter = max(1, total // 4)
    first = [mb for n, mb in samples if n <= quarter]
    last = [mb for n, mb in samples if n > total - quarter]
    print(json.dumps({"peak_rss_mb": round(peak, 1), "loaded_peak_rss_mb": round(loaded_peak, 1),
                      "running_max_first_quarter_mb": round(max(first), 1) if first else None,
                      "running_max_last_quarter_mb": round(max(last), 1) if last else None,
                      "running_max_mb": round(max(mb for _, mb in samples), 1) if samples else None,
                      "samples": len(samples), "frames": result.frames,
                      "run_seconds": round(seconds, 2), "restore_fps": round(result.fps, 3)}))


def crops_at(path: Path, affines: dict[int, dict[int, np.ndarray]], size: int, limit: int) -> dict:
    import av

    from iqpfr.face.align import warp_face

    crops: dict[int, dict[int, np.ndarray]] = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= limit:
                break
            rgb = frame.to_ndarray(format="rgb24")
            for track, affine in affines.get(index, {}).items():
                crops.setdefault(track, {})[index] = warp_face(rgb, affine, size, border="reflect").astype(np.float32)
    return crops


def flicker(crops: dict[int, dict[int, np.ndarray]]) -> float:
    changes = []
    for frames in crops.values():
        for index, crop in frames.items():
            if index - 1 in frames:
                changes.append(float(np.abs(crop - frames[index - 1]).mean()))
    return float(np.mean(changes)) if changes else float("nan")


def measure_rss(args, photo: np.ndarray, work: Path) -> dict:
    """Memory of a fresh process per clip length (``child``); the differences between the lengths."""
    rss: dict = {}
    for seconds in args.rss_seconds:
        path = work / f"rss_{seconds:g}.mp4"
        facts = make_clip(path, photo, seconds, args.rss_fps)
        command = [sys.executable, __file__, "--threads", str(args.threads), "--child", str(path),
                   str(work / f"rss_{seconds:g}_out.mp4")]
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=dict(os.environ))
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        rss[f"{seconds:g}s"] = {**facts, **measured}
        print(f"{seconds:g}-s clip ({facts['frames']} frames): " + ", ".join(
            f"{k} {v}" for k, v in measured.items() if k.endswith("_mb")), flush=True)
    a, b = (rss[f"{s:g}s"] for s in args.rss_seconds)
    rss["difference_mb"] = round(b["peak_rss_mb"] - a["peak_rss_mb"], 1)
    rss["running_max_difference_mb"] = round(b["running_max_mb"] - a["running_max_mb"], 1)
    print(f"peak RSS difference: {rss['difference_mb']} MB; while running: {rss['running_max_difference_mb']} MB",
          flush=True)
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photo", default=None, help="a photo with a face (default: the package's sample)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the integrity clip (25 fps)")
    parser.add_argument("--compare-frames", type=int, default=100, help="frames for flicker and speed on/off")
    parser.add_argument("--rss-seconds", type=float, nargs=2, default=(10.0, 60.0))
    parser.add_argument("--rss-fps", type=int, default=12)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--only-rss", action="store_true",
                        help="measure memory only and replace the 'rss' entry of an existing --out file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch

    torch.set_num_threads(args.threads)
    from iqpfr import FaceRestorer
    from iqpfr.video import VideoOptions

    photo = load_photo(args.photo)
    if args.only_rss:
        report = json.loads(Path(args.out).read_text())
        report["rss"] = measure_rss(args, photo, Path(tempfile.mkdtemp(prefix="iqpfr_video_bench_")))
        Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
        return
    report: dict = {"threads": args.threads, "size": list(SIZE), "photo": args.photo or "astronaut_degraded.jpg",
                    "model": "embedded default", "torch": torch.__version__}
    work = Path(tempfile.mkdtemp(prefix="iqpfr_video_bench_"))
    restorer = FaceRestorer.from_pretrained(device="cpu")
    report["model"] = restorer.description

    # 1 + 3 + 4: the integrity clip, tracking on over all of it; tracking off over its first frames
    clip = work / "clip.mp4"
    report["clip"] = make_clip(clip, photo, args.seconds, 25)
    affines: dict[int, dict[int, np.ndarray]] = {}

    def keep(index, frame, records):
        if index < args.compare_frames:
            affines[index] = {r.index: r.affine.copy() for r in records}

    on_times = []

    def timed(count):
        on_times.append((time.perf_counter(), count))

    start = time.perf_counter()
    on = restorer.restore_video(clip, work / "on.mp4", on_frame=keep, progress=timed)
    on_seconds = time.perf_counter() - start
    src, out = stream_facts(clip), stream_facts(work / "on.mp4")
    report["integrity"] = {
        "input_frames": len(src["pts"]), "output_frames": len(out["pts"]),
        "pts_identical": src["pts"] == out["pts"],
        "audio_packets": len(src["audio"]), "audio_packets_identical": src["audio"] == out["audio"],
        "tracks": on.tracks, "detections": on.detections, "refinements": on.refinements,
    }
    report["tracking_on"] = {"frames": on.frames, "seconds": round(on_seconds, 2), "fps": round(on.fps, 3),
                             "timings": {k: round(v, 2) for k, v in on.timings.items()}}
    print(json.dumps(report["integrity"], default=str)[:400], flush=True)
    print(f"tracking on: {on.frames} frames in {on_seconds:.1f} s = {on.fps:.3f} frames/s", flush=True)

    limit = args.compare_frames
    off = restorer.restore_video(clip, work / "off.mp4", tracking=False,
                                 video_options=VideoOptions(max_frames=limit))
    report["tracking_off"] = {"frames": off.frames, "seconds": round(off.seconds, 2), "fps": round(off.fps, 3),
                              "timings": {k: round(v, 2) for k, v in off.timings.items()}}
    on_first = restorer.restore_video(clip, work / "on_first.mp4", video_options=VideoOptions(max_frames=limit))
    report["tracking_on_first"] = {"frames": on_first.frames, "seconds": round(on_first.seconds, 2),
                                   "fps": round(on_first.fps, 3)}
    print(f"first {limit} frames: tracking on {on_first.fps:.3f} frames/s, off {off.fps:.3f} frames/s", flush=True)

    size = restorer.face_size
    values = {name: flicker(crops_at(path, affines, size, limit)) for name, path in
              (("input", clip), ("tracking_on", work / "on.mp4"), ("tracking_off", work / "off.mp4"))}
    report["flicker"] = {k: round(v, 3) for k, v in values.items()}
    report["flicker"]["on_over_input"] = round(values["tracking_on"] / values["input"], 3)
    report["flicker"]["off_over_input"] = round(values["tracking_off"] / values["input"], 3)
    print("flicker (mean |crop_t - crop_t-1|, 0..255):", report["flicker"], flush=True)

    # 2: memory, each length in a fresh process
    if not args.skip_rss:
        report["rss"] = measure_rss(args, photo, work)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
