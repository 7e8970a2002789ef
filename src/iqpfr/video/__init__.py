"""Video face restoration: stream a file frame by frame, track faces, restore, re-encode, copy audio.

    from iqpfr import FaceRestorer
    restorer = FaceRestorer.from_pretrained()
    report = restorer.restore_video("clip.mp4", "restored.mp4")   # or iqpfr.video.restore_video(...)

Needs PyAV (``pip install 'iqpfr[video]'``), imported only when a video is opened. Modules:
``io`` (sniff, probe, decode, encode, stream copy), ``tracking`` (face tracks, temporal smoothing,
temporal blending), ``pipeline`` (the bounded-queue streaming pipeline).
"""

from __future__ import annotations

__all__ = ["VideoError", "VideoOptions", "VideoResult", "is_video_file", "probe_video", "restore_video"]


def __getattr__(name: str):
    if name in ("VideoError", "is_video_file", "probe_video", "VIDEO_EXTENSIONS"):
        from iqpfr.video import io

        return getattr(io, name)
    if name in ("VideoOptions", "VideoResult", "restore_video"):
        from iqpfr.video import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'iqpfr.video' has no attribute {name!r}")
