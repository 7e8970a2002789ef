"""The streaming video pipeline: decode -> track/align -> batched network -> blend/paste -> encode.

Four stages run at once (three threads and the caller's, which runs the network, as in
``FaceRestorer.iter_restore``) and hand frames on through bounded queues, so the frames in memory
are at most the queues' sizes plus the tracker's look-ahead whatever the video's length. Packets of
the copied streams (audio, subtitles) travel through the same queues in demux order and are muxed
unchanged between the encoded frames. The output is written to a temporary file next to the target
and renamed onto it at the end (``iqpfr.utils.fs.atomic_path``): an interrupted or failed run leaves
nothing under the final name.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqpfr.face.pipeline import FaceRecord, paste_faces, to_float
from iqpfr.io import LoadedImage
from iqpfr.video.io import (
    DEFAULT_CODEC,
    DEFAULT_CRF,
    DEFAULT_MAX_FRAME_PIXELS,
    DEFAULT_PRESET,
    DecodedFrame,
    VideoError,
    VideoInfo,
    VideoReader,
    VideoWriter,
    probe_video,
)
from iqpfr.video.tracking import FaceTracker, TemporalBlender, Track, TrackingOptions

_END = object()


@dataclass
class VideoOptions:
    """Settings of one video run (the face settings come in a ``RestoreOptions``).

    codec: ``h264`` (libx264, default), ``same`` (the input's codec when it can be encoded here), or an
    encoder name (``libx265``, ``libvpx-vp9``, ``mpeg4``...); crf / preset: libx264/libx265/libvpx
    quality (CRF, lower is better) and speed. start / duration (seconds), max_frames: restore a part.
    max_pixels: refuse larger frames. queue_frames: the size of each bounded queue between stages.
    codec_threads: decoder/encoder threads (0: FFmpeg's choice).
    """

    codec: str = DEFAULT_CODEC
    crf: float | None = DEFAULT_CRF
    preset: str | None = DEFAULT_PRESET
    start: float = 0.0
    duration: float | None = None
    max_frames: int | None = None
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    batch_size: int = 8
    queue_frames: int = 8
    codec_threads: int = 0
    overwrite: bool = False


@dataclass
class VideoResult:
    """One restored video: frames written, tracks (id, frames, first/last frame, quality), timings
    (seconds per stage, summed over frames; stages overlap, so they add up to more than ``seconds``)."""

    input: Path
    output: Path
    info: VideoInfo
    frames: int = 0
    face_frames: int = 0
    seconds: float = 0.0
    tracks: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    detections: int = 0
    refinements: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "input": str(self.input), "output": str(self.output), "video": self.info.to_dict(),
            "frames": self.frames, "face_frames": self.face_frames, "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 3), "detections": self.detections, "refinements": self.refinements,
            "tracks": self.tracks, "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "notes": list(self.notes),
        }


@dataclass
class _FrameJob:
    """A frame in flight, shaped like the photo pipeline's job so ``FaceRestorer._run_batch`` and
    ``_upsample_faces`` take it."""

    frame: DecodedFrame
    image: LoadedImage
    records: list[FaceRecord]
    source: Any = None
    error: BaseException | None = None
    remaining: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class _Stopped(Exception):
    """Another stage failed: this one stops quietly."""


def restore_video(
    restorer,
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    options: VideoOptions | None = None,
    restore_options=None,
    progress: Callable[[int], None] | None = None,
    on_frame: Callable[[int, DecodedFrame, list[FaceRecord]], None] | None = None,
) -> VideoResult:
    """Restore every face of the video ``source`` into ``target`` (format from its suffix).

    restorer: a ``FaceRestorer``; restore_options: its ``RestoreOptions`` (fidelity, quality, face
    filter, colour fix, grayscale, face_upsample; upscale and background up-sampling are not applied
    to videos). progress(n): called with each batch of frames written. on_frame(index, frame,
    records): called after each frame is pasted (records carry the affine, crop and restored crop).
    Raises VideoError (one line naming the file) for bad input, FileExistsError when ``target``
    exists without ``options.overwrite``; nothing is left under ``target`` on failure.
    """
    from iqpfr.utils.fs import atomic_path

    options = options or VideoOptions()
    # the restorer's own defaults (no import of iqpfr.restorer: it imports this module)
    restore_options = restore_options or restorer._options(face_upsample=False)
    source, target = Path(source), Path(target)
    if not options.overwrite and target.exists():
        raise FileExistsError(f"{target}: exists (use --overwrite to replace it)")
    info = probe_video(source, max_pixels=options.max_pixels)
    result = VideoResult(source, target, info)
    if restore_options.upscale != 1:
        result.notes.append("up-scaling is not applied to videos: the output keeps the input's size")
    if restore_options.bg_upsampler == "realesrgan":
        result.notes.append("the background up-sampler is not applied to videos")
    detector = restorer.detector  # built here, not in a worker thread
    if restore_options.face_upsample:
        _ = restorer.upsampler
    reader = VideoReader(info, start=options.start, duration=options.duration, max_frames=options.max_frames,
                         threads=options.codec_threads)
    try:
        with atomic_path(target, overwrite=options.overwrite) as tmp:
            writer = VideoWriter(tmp, info, reader.streams_to_copy(), codec=options.codec, crf=options.crf,
                                 preset=options.preset, threads=options.codec_threads,
                                 format_name=_format_for(target))
            result.notes.extend(writer.notes)
            run = _Run(restorer, detector, reader, writer, options, restore_options, result, progress, on_frame)
            try:
                run.execute()
            except BaseException:
                writer.abort()
                raise
    finally:
        reader.close()
    return result


def _format_for(target: Path) -> str | None:
    """The muxer for ``target`` (the temporary file's own suffix says the same, but be explicit)."""
    from iqpfr.video.io import import_av

    av = import_av()
    try:
        fmt = av.format.ContainerFormat(target.suffix.lstrip(".").lower() or "mp4", "w")
        return fmt.name
    except (ValueError, av.FFmpegError):
        return None  # FFmpeg guesses from the file name


class _Run:
    """One pipeline run: threads, queues, stage functions."""

    def __init__(self, restorer, detector, reader: VideoReader, writer: VideoWriter, options: VideoOptions,
                 restore_options, result: VideoResult, progress, on_frame):
        self.restorer, self.reader, self.writer = restorer, reader, writer
        self.options, self.restore_options, self.result = options, restore_options, result
        self.progress, self.on_frame = progress, on_frame
        self.tracker = FaceTracker(detector, options.tracking, restore_options.face_filter)
        self.blender = TemporalBlender(options.tracking.blend, options.tracking.blend_tau)
        size = max(2, int(options.queue_frames))
        self.q_decoded: queue.Queue = queue.Queue(maxsize=size)
        self.q_aligned: queue.Queue = queue.Queue(maxsize=size)
        self.q_restored: queue.Queue = queue.Queue(maxsize=size)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.timings: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------------------- plumbing

    def _put(self, q: queue.Queue, item) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stopped

    def _thread(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def body():
            try:
                target()
            except _Stopped:
                pass
            except BaseException as exc:  # the first failure stops every stage
                self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=body, name=f"iqpfr-video-{name}", daemon=True)
        thread.start()
        return thread

    def _time(self, stage: str, key: str, seconds: float) -> None:
        bucket = self.timings.setdefault(stage, {})
        bucket[key] = bucket.get(key, 0.0) + seconds

    def execute(self) -> None:
        start = time.perf_counter()
        threads = [self._thread("decode", self._decode), self._thread("track", self._track),
                   self._thread("encode", self._encode)]
        try:
            self._network()
        except _Stopped:
            pass
        except BaseException as exc:
            self.errors.append(exc)
            self.stop.set()
        finally:
            if not self.errors and not self.stop.is_set():
                threads[-1].join()  # the encoder finishes the file
            else:
                self.stop.set()
            for thread in threads:
                thread.join()
        if self.errors:
            raise self.errors[0]
        result = self.result
        result.seconds = time.perf_counter() - start
        for stage in self.timings.values():
            for key, value in stage.items():
                result.timings[key] = result.timings.get(key, 0.0) + value
        result.detections, result.refinements = self.tracker.detections, self.tracker.refinements
        result.tracks = [_track_summary(t) for t in self.tracker.all_tracks() if t.emitted]

    # ---------------------------------------------------------------------------------- stages

    def _decode(self) -> None:
        iterator = iter(self.reader)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                break
            finally:
                self._time("decode", "decode", time.perf_counter() - start)
            self._put(self.q_decoded, item)
        self._put(self.q_decoded, _END)

    def _track(self) -> None:
        buffer: deque = deque()
        frames_buffered = 0
        lookahead = self.options.tracking.lookahead
        while True:
            item = self._get(self.q_decoded)
            if item is _END:
                break
            if not isinstance(item, DecodedFrame):
                if buffer:
                    buffer.append(item)  # stays behind the frames before it
                else:
                    self._put(self.q_aligned, item)
                continue
            start = time.perf_counter()
            self.tracker.observe(item.index, item.rgb)
            self._time("track", "detect", time.perf_counter() - start)
            buffer.append(item)
            frames_buffered += 1
            while frames_buffered > lookahead:
                frames_buffered -= self._emit(buffer)
        while buffer:
            self._emit(buffer)
        self._put(self.q_aligned, _END)

    def _emit(self, buffer: deque) -> int:
        """Hand on the items of ``buffer`` up to and including its first frame; returns 1 (a frame left)."""
        while buffer and not isinstance(buffer[0], DecodedFrame):
            self._put(self.q_aligned, buffer.popleft())
        if not buffer:
            return 0
        frame = buffer.popleft()
        start = time.perf_counter()
        records = []
        size = self.restorer.face_size
        from iqpfr.face.align import alignment_affine, warp_face

        for track, points in self.tracker.faces_at(frame.index):
            landmarks5 = points[:5]
            landmarks68 = points[5:] if len(points) == 73 else None
            affine = alignment_affine(landmarks5, size)
            crop = to_float(warp_face(frame.rgb, affine, size, border="reflect"))
            corners = landmarks68 if landmarks68 is not None else landmarks5
            box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
            obs = track.observations.get(frame.index)
            record = FaceRecord(track.id, box, obs.score if obs else 0.0, landmarks5, affine, crop, landmarks68)
            self._set_quality(record, track, frame, buffer, points)
            records.append(record)
        self._time("track", "align", time.perf_counter() - start)
        self.tracker.prune(frame.index)
        job = _FrameJob(frame, LoadedImage(pixels=frame.rgb), records, source=self.result.input)
        job.remaining = len(records)
        self._put(self.q_aligned, job)
        return 1

    def _set_quality(self, record: FaceRecord, track: Track, frame: DecodedFrame, buffer: deque,
                     points: np.ndarray) -> None:
        """The record's w (and with fidelity "auto" its NIQE, strength, generative share): per track
        from up to ``quality_samples`` buffered frames when tracking, per frame otherwise."""
        opts = self.restore_options
        if opts.fidelity != "auto":
            record.fidelity = track.fidelity = float(opts.fidelity)
            return
        from iqpfr.face.adaptive import adaptive_fidelity, generative_share, restoration_strength

        start = time.perf_counter()
        if not self.options.tracking.enabled:
            niqe = _face_niqe(frame.rgb, points[:5])
        elif track.quality is None:
            candidates = [(frame, points[:5])]
            for item in buffer:
                if isinstance(item, DecodedFrame):
                    value = track.value_at(item.index, self.options.tracking.max_gap)
                    if value is not None:
                        candidates.append((item, value[:5]))
            count = max(1, int(self.options.tracking.quality_samples))
            picks = np.unique(np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int))
            niqe = float(np.median([_face_niqe(candidates[i][0].rgb, candidates[i][1]) for i in picks]))
        else:
            niqe = track.quality[0]
        if self.options.tracking.enabled and track.quality is None or not self.options.tracking.enabled:
            strength = restoration_strength(niqe)
            generative = generative_share(niqe) if opts.face_upsample else 1.0
            track.quality = (niqe, strength, adaptive_fidelity(strength), generative)
        record.input_niqe, record.strength, record.fidelity, record.generative = track.quality
        self._time("track", "input_quality", time.perf_counter() - start)

    def _network(self) -> None:
        batch_size = max(1, int(self.options.batch_size))
        max_pending = 2 * max(batch_size, int(self.options.queue_frames))
        pending: deque = deque()
        faces: deque = deque()
        frames_pending = 0
        while True:
            item = self._get(self.q_aligned)
            if item is _END:
                while faces:
                    self._batch(faces, batch_size)
                frames_pending -= self._forward(pending)
                self._put(self.q_restored, _END)
                return
            pending.append(item)
            if isinstance(item, _FrameJob):
                frames_pending += 1
                faces.extend((item, record) for record in item.records)
            if len(faces) >= batch_size or (faces and frames_pending >= max_pending):
                self._batch(faces, batch_size)
            frames_pending -= self._forward(pending)

    def _batch(self, faces: deque, batch_size: int) -> None:
        items = [faces[i][0] for i in range(min(batch_size, len(faces)))]
        start = time.perf_counter()
        self.restorer._run_batch(faces, batch_size, self.restore_options)
        self._time("network", "model", time.perf_counter() - start)
        for job in items:
            if job.error is not None:
                raise VideoError(self.result.input, f"frame {job.frame.index}: {job.error}")

    def _forward(self, pending: deque) -> int:
        """Send on the leading items whose faces are all restored; returns the frames sent."""
        sent = 0
        while pending and (not isinstance(pending[0], _FrameJob) or pending[0].remaining == 0):
            item = pending.popleft()
            sent += isinstance(item, _FrameJob)
            self._put(self.q_restored, item)
        return sent

    def _encode(self) -> None:
        opts = self.restore_options
        reported = 0
        last_report = time.perf_counter()
        while True:
            item = self._get(self.q_restored)
            if item is _END:
                break
            if not isinstance(item, _FrameJob):
                start = time.perf_counter()
                self.writer.copy(item)
                self._time("encode", "copy", time.perf_counter() - start)
                continue
            start = time.perf_counter()
            frame, records = item.frame, item.records
            for record in records:
                if record.restored is not None:
                    record.restored = self.blender(frame.index, record.index, record.crop, record.restored)
            if records and opts.face_upsample:
                self.restorer._upsample_faces(item, opts)
            if records:
                pixels = paste_faces(item.image, records, color=opts.color_fix, grayscale=opts.grayscale).pixels
            else:
                pixels = frame.rgb
            self._time("encode", "paste", time.perf_counter() - start)
            start = time.perf_counter()
            self.writer.write(frame, pixels)
            self._time("encode", "encode", time.perf_counter() - start)
            self.result.frames += 1
            self.result.face_frames += len(records)
            if self.on_frame is not None:
                self.on_frame(frame.index, frame, records)
            now = time.perf_counter()
            if self.progress is not None and (now - last_report > 0.2):
                self.progress(self.result.frames - reported)
                reported, last_report = self.result.frames, now
        start = time.perf_counter()
        self.writer.close()
        self._time("encode", "encode", time.perf_counter() - start)
        if self.progress is not None and self.result.frames > reported:
            self.progress(self.result.frames - reported)


def _face_niqe(rgb: np.ndarray, landmarks5: np.ndarray) -> float:
    from iqpfr.face.adaptive import QUALITY_SIDE, face_niqe
    from iqpfr.face.align import alignment_affine, warp_face

    return face_niqe(warp_face(rgb, alignment_affine(landmarks5, QUALITY_SIDE), QUALITY_SIDE, border="reflect"))


def _track_summary(track: Track) -> dict:
    summary = {"id": track.id, "frames": track.emitted, "first_frame": track.first_frame,
               "last_frame": track.last_frame}
    if track.quality is not None:
        niqe, strength, fidelity, generative = track.quality
        summary.update(input_niqe=round(float(niqe), 3), strength=round(float(strength), 4),
                       fidelity=round(float(fidelity), 4), generative=round(float(generative), 4))
    elif track.fidelity is not None:
        summary["fidelity"] = round(float(track.fidelity), 4)
    return summary
