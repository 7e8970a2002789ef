"""Synthetic test clips: a photo panned and zoomed over time, with a sine-tone audio track, a display
rotation or variable frame timing (tests and ``benchmarks/video.py`` make their inputs with it)."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np


def pan_zoom_frames(photo: np.ndarray, size: tuple[int, int], count: int, *, zoom: tuple[float, float] = (1.0, 1.25),
                    pan: float = 0.15, noise: float = 0.0, seed: int = 0,
                    centre: tuple[float, float] = (0.5, 0.5)):
    """Yield ``count`` (H, W, 3) uint8 frames of ``size`` = (W, H): a window over ``photo`` that
    shrinks by ``zoom`` and drifts by ``pan`` of the photo's side, with optional Gaussian noise
    (std in 0..255, different every frame: sensor noise that flickers); the window's centre
    starts near ``centre`` (fractions of the photo's width and height)."""
    import cv2

    height, width = photo.shape[:2]
    out_w, out_h = size
    aspect = out_w / out_h
    rng = np.random.default_rng(seed)
    for i in range(count):
        t = i / max(count - 1, 1)
        scale = zoom[0] + (zoom[1] - zoom[0]) * t
        win_h = min(height, width / aspect) / scale
        win_w = win_h * aspect
        cx = centre[0] * width + pan * width * (t - 0.5)
        cy = centre[1] * height + 0.5 * pan * height * np.sin(np.pi * t)
        x0 = float(np.clip(cx - win_w / 2, 0, width - win_w))
        y0 = float(np.clip(cy - win_h / 2, 0, height - win_h))
        matrix = np.array([[out_w / win_w, 0, -x0 * out_w / win_w], [0, out_h / win_h, -y0 * out_h / win_h]])
        frame = cv2.warpAffine(photo, matrix, (out_w, out_h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        if noise:
            frame = np.clip(frame.astype(np.float32) + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
        yield frame


def write_clip(
    path: str | os.PathLike,
    frames,
    *,
    fps: int = 25,
    audio: bool = True,
    sample_rate: int = 16000,
    rotation: int = 0,
    vfr: bool = False,
    codec: str = "libx264",
    color_range: int | None = None,
    subtitles: list[str] | None = None,
) -> dict:
    """Encode (H, W, 3) uint8 upright ``frames`` into ``path``; returns what was written.

    audio: a 440 Hz sine (AAC, mono) as long as the video. rotation: the display matrix (degrees
    counter-clockwise); the frames are stored rotated the other way, so they display upright. vfr:
    frame durations alternate 1, 2 and 3 ticks of 1/fps. color_range: 1 limited, 2 full.
    subtitles: lines of an ASS subtitle stream (Matroska only), one per second from t = 0.5 s, each
    shown for 0.8 s; their packet payloads are returned under ``"subtitles"``.
    """
    import itertools

    import av

    frames = iter(frames)  # streamed: a long clip is never held in memory
    first = next(frames)
    frames = itertools.chain([first], frames)
    height, width = first.shape[:2]
    k = (rotation // 90) % 4
    if k % 2:
        height, width = width, height
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    time_base = Fraction(1, fps * 6)
    stream.time_base = stream.codec_context.time_base = time_base
    if codec == "libx264":
        stream.options = {"crf": "20", "preset": "ultrafast"}
    if color_range is not None:
        stream.codec_context.color_range = color_range
    if rotation:
        stream.set_display_rotation(rotation)
    tone = None
    if audio:
        tone = container.add_stream("aac", rate=sample_rate)
        tone.layout = "mono"
    captions = None
    if subtitles:
        captions = container.add_stream("ass")
        captions.time_base = Fraction(1, 1000)
    steps = [1, 2, 3] if vfr else [1]
    pts, stamps = 0, []
    for i, rgb in enumerate(frames):
        coded = np.ascontiguousarray(np.rot90(rgb, -k)) if k else rgb
        frame = av.VideoFrame.from_ndarray(coded, format="rgb24")
        if color_range is not None:
            frame = frame.reformat(format="yuv420p", dst_color_range=color_range)
        frame.pts = pts
        frame.time_base = time_base
        stamps.append(pts)
        pts += 6 * steps[i % len(steps)]
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    seconds = float(pts * time_base)
    payloads = []
    for i, line in enumerate(subtitles or []):
        # a Matroska ASS packet: ReadOrder, Layer, Style, Name, MarginL, MarginR, MarginV, Effect, Text
        payload = f"{i},0,Default,,0,0,0,,{line}".encode()
        packet = av.Packet(payload)
        packet.stream = captions
        packet.time_base = Fraction(1, 1000)
        packet.pts = packet.dts = 500 + 1000 * i
        packet.duration = 800
        container.mux(packet)
        payloads.append(payload)
    if tone is not None:
        samples = int(seconds * sample_rate)
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / sample_rate)).astype(np.float32)
        step = 1024
        for offset in range(0, samples, step):
            chunk = wave[offset:offset + step]
            frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = offset
            for packet in tone.encode(frame):
                container.mux(packet)
        for packet in tone.encode(None):
            container.mux(packet)
    container.close()
    return {"frames": len(stamps), "pts": stamps, "time_base": time_base, "seconds": seconds, "size": (width, height),
            "subtitles": payloads}
