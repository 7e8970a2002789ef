"""Video files through PyAV (FFmpeg inside its wheel, no system ffmpeg): sniffing, probing,
frame-by-frame decoding and encoding, and packet-for-packet copying of the other streams.

``av`` is imported inside the functions (extra ``iqpfr[video]``), so importing this module is cheap
and ``is_video_file`` works without PyAV. Every failure is a :class:`VideoError` whose message is one
line naming the file.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".vob", ".mxf", ".y4m",
)
# a frame above this many pixels is refused (8K UHD is 33.2 MP); --max-pixels changes it
DEFAULT_MAX_FRAME_PIXELS = 36_000_000
# ISO-BMFF brands that are still images, not videos (HEIF/AVIF photos share the 'ftyp' box)
_IMAGE_BRANDS = {b"heic", b"heix", b"heif", b"mif1", b"msf1", b"avif", b"hevc", b"heim", b"heis"}
# the default encoder per codec family asked for, and the container each output suffix means
DEFAULT_CODEC = "h264"
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"
_ENCODERS = {"h264": "libx264", "hevc": "libx265", "h265": "libx265", "vp9": "libvpx-vp9", "vp8": "libvpx"}
_SUFFIX_BY_FORMAT = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi",
                     "mpegts": ".ts", "flv": ".flv", "asf": ".wmv", "ogg": ".ogv", "mpeg": ".mpg"}


class VideoError(ValueError):
    """A video that cannot be read or written; ``str(exc)`` is ``"<path>: <reason>"`` on one line."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{path}: {self.reason}" if path is not None else self.reason)


class VideoUnavailable(RuntimeError):
    """PyAV (the ``video`` extra) is not installed, or is older than ``MIN_PYAV``."""


MIN_PYAV = (18, 0)  # the writer keeps rotation with stream.set_display_rotation, which PyAV 17 lacks


def import_av():
    """The ``av`` module (PyAV >= 18), or VideoUnavailable with the line that fixes it."""
    needs = f"video needs PyAV >= {MIN_PYAV[0]}"
    if sys.version_info < (3, 11):  # PyAV 18 publishes no wheels for older Pythons
        needs += f", which needs Python >= 3.11 (this is {sys.version_info[0]}.{sys.version_info[1]})"
    try:
        import av
    except ImportError:
        raise VideoUnavailable(f"{needs}: pip install 'iqpfr[video]'") from None
    found = tuple(int(part) for part in re.findall(r"\d+", str(getattr(av, "__version__", "0")))[:2])
    if found < MIN_PYAV:
        raise VideoUnavailable(f"{needs}, found {av.__version__}: pip install -U 'av>={MIN_PYAV[0]}'")
    return av


# ------------------------------------------------------------------------------------- sniffing


def sniff_container(head: bytes) -> str | None:
    """The container family of a file from its first bytes (>= 189 for MPEG-TS), or None."""
    if head[:4] == b"\x1aE\xdf\xa3":
        return "matroska"
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "mov"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return "asf"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "mpeg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    if head[:9] == b"YUV4MPEG2":
        return "y4m"
    return None


def is_video_file(path: str | os.PathLike) -> bool:
    """A file to treat as a video: its first bytes are a video container's (whatever its suffix),
    or it has a video suffix (so a corrupt ``.mp4`` still gets a video error, not an image one)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return path.suffix.lower() in VIDEO_EXTENSIONS
    return sniff_container(head) is not None or path.suffix.lower() in VIDEO_EXTENSIONS


def output_suffix(path: str | os.PathLike, format_name: str | None = None) -> str:
    """The suffix of a restored video: the input's when it is a video suffix, else the container's."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return suffix
    return _SUFFIX_BY_FORMAT.get(format_name or "", ".mp4")


# -------------------------------------------------------------------------------------- probing


@dataclass
class VideoInfo:
    """What a video holds. width/height: coded frame size (before ``rotation``, degrees
    counter-clockwise from the display matrix); time_base / average_rate as Fractions; frames: the
    container's count (0 when it does not say); duration in seconds (0 when unknown);
    copy_streams: (index, type, codec) of the audio/subtitle streams copied packet for packet."""

    path: Path
    format_name: str
    codec: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    average_rate: Fraction | None
    frames: int
    duration: float
    rotation: int = 0
    color_range: int = 0
    colorspace: int = 2
    color_primaries: int = 2
    color_trc: int = 2
    sample_aspect_ratio: Fraction | None = None
    start_time: float = 0.0
    copy_streams: list[tuple[int, str, str]] = field(default_factory=list)

    def estimated_frames(self) -> int:
        """The frame count, from the container or duration x rate (0 when neither is known)."""
        if self.frames:
            return self.frames
        if self.duration and self.average_rate:
            return int(round(self.duration * float(self.average_rate)))
        return 0

    def to_dict(self) -> dict:
        return {
            "format": self.format_name, "codec": self.codec, "width": self.width, "height": self.height,
            "pix_fmt": self.pix_fmt, "time_base": str(self.time_base),
            "average_rate": None if self.average_rate is None else str(self.average_rate),
            "frames": self.frames, "duration": round(self.duration, 4), "rotation": self.rotation,
            "color_range": self.color_range,
            "copy_streams": [{"index": i, "type": t, "codec": c} for i, t, c in self.copy_streams],
        }


def _open(path: Path):
    av = import_av()
    if not path.exists():
        raise VideoError(path, "no such file")
    if path.is_dir():
        raise VideoError(path, "is a folder, not a video")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as exc:
        raise VideoError(path, f"not a readable video ({_ffmpeg_reason(exc)})") from None
    except (OSError, ValueError) as exc:
        raise VideoError(path, f"cannot open ({exc})") from None


def _ffmpeg_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split()).rstrip(":") or type(exc).__name__


def _video_stream(container, path: Path):
    streams = list(container.streams.video)
    if not streams:
        kinds = sorted({s.type for s in container.streams})
        raise VideoError(path, f"no video stream ({', '.join(kinds)} only)" if kinds else
                         "no video stream (the file holds no streams)")
    # the first stream that is not an attached picture (cover art)
    stream = next((s for s in streams if not _is_cover(s)), None)
    if stream is None:
        raise VideoError(path, "no video stream (only an attached cover picture)")
    codec = stream.codec_context
    if codec is None or getattr(codec, "name", None) in (None, "none"):
        raise VideoError(path, "unsupported video codec (the FFmpeg inside PyAV has no decoder for it)")
    return stream


def _is_cover(stream) -> bool:
    try:
        return bool(int(stream.disposition) & 0x400)  # AV_DISPOSITION_ATTACHED_PIC
    except (TypeError, ValueError, AttributeError):
        return False


def probe_video(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_FRAME_PIXELS) -> VideoInfo:
    """Open ``path``, check it can be restored and describe it (decodes the first frame only).

    Raises VideoError (one line) for: a missing or empty file, not a video, no video stream, an
    unsupported codec, a frame above ``max_pixels``, no decodable frame.
    """
    av = import_av()
    path = Path(path)
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        codec = stream.codec_context
        width, height = int(codec.width or 0), int(codec.height or 0)
        if width * height > max_pixels:
            raise VideoError(path, f"frame size {width}x{height} is above the limit of {max_pixels / 1e6:g} MP "
                             "(--max-pixels)")
        try:
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as exc:
            raise VideoError(path, f"corrupt video data ({_ffmpeg_reason(exc)})") from None
        if first is None:
            raise VideoError(path, "no video frames (the video stream is empty)")
        if first.width * first.height > max_pixels:
            raise VideoError(path, f"frame size {first.width}x{first.height} is above the limit of "
                             f"{max_pixels / 1e6:g} MP (--max-pixels)")
        time_base = stream.time_base or Fraction(1, 90000)
        duration = 0.0
        if stream.duration:
            duration = float(stream.duration * time_base)
        elif container.duration:
            duration = container.duration / 1e6
        copy = [(s.index, s.type, getattr(s.codec_context, "name", None) or "?")
                for s in container.streams if s.type in ("audio", "subtitle")]
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            path=path, format_name=container.format.name, codec=codec.name, width=first.width,
            height=first.height, pix_fmt=first.format.name, time_base=Fraction(time_base),
            average_rate=Fraction(rate) if rate else None, frames=int(stream.frames or 0), duration=duration,
            rotation=int(round(first.rotation or 0)) % 360, color_range=int(first.color_range or 0),
            colorspace=int(first.colorspace), color_primaries=int(first.color_primaries),
            color_trc=int(first.color_trc), sample_aspect_ratio=codec.sample_aspect_ratio,
            start_time=float(stream.start_time * time_base) if stream.start_time is not None else 0.0,
            copy_streams=copy,
        )
    finally:
        container.close()


# ------------------------------------------------------------------------------------- decoding


@dataclass
class DecodedFrame:
    """One decoded frame. rgb: (H, W, 3) uint8 upright (display rotation applied); pts in the
    stream's time base (shifted by the reader's start offset); time in seconds."""

    index: int
    pts: int | None
    time: float
    rgb: np.ndarray


class VideoReader:
    """Stream one file's video frames (as upright RGB) and its other packets, in demux order.

    Iterating yields ``DecodedFrame`` and, for each audio/subtitle stream in ``info.copy_streams``,
    the PyAV packets unchanged (their timestamps shifted by ``start``). ``start``/``duration``
    (seconds) and ``max_frames`` select a part; ``decoded`` counts the frames given out.
    """

    def __init__(self, info: VideoInfo, *, start: float = 0.0, duration: float | None = None,
                 max_frames: int | None = None, threads: int = 0):
        self.info = info
        self.start, self.duration, self.max_frames = float(start or 0.0), duration, max_frames
        self.container = _open(info.path)
        self.stream = _video_stream(self.container, info.path)
        self.stream.thread_type = "AUTO"
        if threads:
            self.stream.codec_context.thread_count = int(threads)
        self.copy = {i for i, _, _ in info.copy_streams}
        self.decoded = 0
        self.limited = bool(self.start or duration is not None or max_frames is not None)

    def streams_to_copy(self) -> list:
        return [s for s in self.container.streams if s.index in self.copy]

    def _offset(self, time_base) -> int:
        return int(round(self.start / float(time_base))) if self.start and time_base else 0

    def __iter__(self) -> Iterator[Any]:
        av = import_av()
        path = self.info.path
        end = None if self.duration is None else self.start + float(self.duration)
        if self.start:
            # to the key frame at or before start; earlier frames and packets are dropped below
            self.container.seek(int(self.start / float(self.stream.time_base)), stream=self.stream,
                                backward=True, any_frame=False)
        video_offset = self._offset(self.stream.time_base)
        k = (self.info.rotation // 90) % 4
        streams = [self.stream, *self.streams_to_copy()]
        done = False
        last = None
        try:
            for packet in self.container.demux(*streams):
                if packet.stream.index != self.stream.index:
                    if packet.dts is None or packet.size == 0 or done:
                        continue
                    seconds = float(packet.pts * packet.time_base) if packet.pts is not None else None
                    if seconds is not None and ((self.start and seconds < self.start - 1e-9) or (end is not None and seconds >= end)):
                        continue
                    if self.start:
                        offset = self._offset(packet.time_base)
                        packet.pts = None if packet.pts is None else packet.pts - offset
                        packet.dts = packet.dts - offset
                    yield packet
                    continue
                if done:
                    continue
                for frame in packet.decode():
                    seconds = float(frame.pts * frame.time_base) if frame.pts is not None else float(frame.time or 0)
                    if self.start and seconds < self.start - 1e-9:
                        continue
                    if (end is not None and seconds >= end) or (
                            self.max_frames is not None and self.decoded >= self.max_frames):
                        done = True
                        break
                    rgb = frame_to_rgb(frame, self.info)
                    if k:
                        rgb = np.ascontiguousarray(np.rot90(rgb, k))
                    pts = None if frame.pts is None else frame.pts - video_offset
                    last = seconds
                    yield DecodedFrame(self.decoded, pts, seconds - self.start, rgb)
                    self.decoded += 1
        except av.FFmpegError as exc:
            raise VideoError(path, f"corrupt or truncated video data after {self.decoded} frames "
                             f"({_ffmpeg_reason(exc)})") from None
        if self.decoded == 0:
            raise VideoError(path, "no video frames in the selected range" if self.limited else "no video frames")
        if not self.limited and self.info.frames and self.decoded < self.info.frames and self._ends_early(last):
            raise VideoError(path, f"truncated: decoded {self.decoded} of the {self.info.frames} frames "
                             "the container lists")

    def _ends_early(self, last: float | None) -> bool:
        """Whether the frames stopped well before the stream's stated end. (The frame count alone
        misleads: AVI counts time-base ticks: at a 1/60 time base and 10 frames/s it lists 6 per frame.)"""
        info = self.info
        if last is None or not info.duration:
            return True
        # the frames' own mean spacing: a container's rate may be its time base's (AVI: 60 for 1/60)
        interval = (last - info.start_time) / (self.decoded - 1) if self.decoded > 1 else 0.04
        return last + 2.0 * max(interval, 1e-3) < info.start_time + info.duration

    def close(self) -> None:
        self.container.close()


def frame_to_rgb(frame, info: VideoInfo) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame, using its own colour matrix and range."""
    kwargs = {}
    if info.color_range:
        kwargs["src_color_range"] = info.color_range
    if info.colorspace not in (2,):  # unspecified: swscale's default (BT.601)
        kwargs["src_colorspace"] = info.colorspace
    return frame.to_ndarray(format="rgb24", **kwargs)


# ------------------------------------------------------------------------------------- encoding


def choose_encoder(codec: str, info: VideoInfo, container) -> tuple[str, list[str]]:
    """The encoder name for ``codec`` (``h264`` default, ``same``: the input's codec, or an encoder
    or codec name) that ``container`` can hold; notes say what was substituted."""
    av = import_av()
    notes = []
    wanted = info.codec if codec == "same" else codec
    name = _ENCODERS.get(wanted, wanted)
    try:
        encoder = av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        encoder = None
        if codec == "same":
            notes.append(f"no encoder for the input's codec {info.codec}: {DEFAULT_CODEC} used")
        else:
            raise VideoError(None, f"unknown video encoder {codec!r}") from None
    supported = container.supported_codecs
    if encoder is None or encoder.canonical_name not in supported:
        fallback = container.default_video_codec
        if encoder is not None:
            notes.append(f"{container.format.name} cannot hold {encoder.canonical_name}: {fallback} used")
        name = _ENCODERS.get(fallback, fallback)
        if "h264" in supported and codec in ("same", DEFAULT_CODEC):
            name = "libx264"
    return name, notes


class VideoWriter:
    """Encode restored frames and copy the other streams' packets into ``path`` (format from its suffix).

    The video stream keeps the input's time base, frame timestamps, average rate, display rotation,
    colour range/matrix/primaries/transfer and sample aspect ratio; the copied streams are added
    from their input streams as templates and get their packets unchanged.
    """

    def __init__(self, path: str | os.PathLike, info: VideoInfo, copy_streams: list, *, codec: str = DEFAULT_CODEC,
                 crf: float | None = DEFAULT_CRF, preset: str | None = DEFAULT_PRESET, threads: int = 0,
                 format_name: str | None = None):
        av = import_av()
        self.path = Path(path)
        self.info = info
        self.notes: list[str] = []
        try:
            self.container = av.open(str(self.path), "w", format=format_name)
        except (av.FFmpegError, ValueError) as exc:
            raise VideoError(self.path, f"cannot create ({_ffmpeg_reason(exc)})") from None
        try:
            self._setup(av, copy_streams, codec, crf, preset, threads)
        except BaseException:
            self.container.close()
            raise

    def _setup(self, av, copy_streams, codec, crf, preset, threads) -> None:
        info = self.info
        name, notes = choose_encoder(codec, info, self.container)
        self.notes.extend(notes)
        rate = info.average_rate or Fraction(25)
        stream = self.container.add_stream(name, rate=rate)
        context = stream.codec_context
        # the coded (not upright) size: the frames go back in their coded orientation
        stream.width, stream.height = info.width, info.height
        formats = [f.name for f in (context.codec.video_formats or [])]
        plain = info.pix_fmt.replace("yuvj", "yuv")  # yuvj* are yuv* with full range, said by color_range
        stream.pix_fmt = plain if plain in formats or not formats else (
            "yuv420p" if "yuv420p" in formats else formats[0])
        if info.pix_fmt.startswith("yuvj") and not info.color_range:
            info.color_range = 2
        self.pix_fmt = stream.pix_fmt
        stream.time_base = info.time_base
        context.time_base = info.time_base
        context.color_range = info.color_range
        context.colorspace = info.colorspace
        context.color_primaries = info.color_primaries
        context.color_trc = info.color_trc
        if info.sample_aspect_ratio:
            context.sample_aspect_ratio = info.sample_aspect_ratio
        if threads:
            context.thread_count = int(threads)
        options = {}
        if name in ("libx264", "libx265") and crf is not None:
            options["crf"] = f"{crf:g}"
        if name in ("libx264", "libx265") and preset:
            options["preset"] = preset
        if name.startswith("libvpx") and crf is not None:
            options.update({"crf": f"{int(crf)}", "b": "0"})
        if name in ("libx265",):
            options["x265-params"] = "log-level=error"
        stream.options = options
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self.video = stream
        self.copies: dict[int, Any] = {}
        for source in copy_streams:
            try:
                self.copies[source.index] = self.container.add_stream_from_template(source)
            except (av.FFmpegError, ValueError) as exc:
                self.notes.append(f"stream {source.index} ({source.type}) dropped: this container cannot hold it "
                                  f"({_ffmpeg_reason(exc)})")

    def write(self, frame: DecodedFrame, rgb: np.ndarray) -> None:
        """Encode ``rgb`` (upright (H, W, 3) uint8) with ``frame``'s timestamp."""
        av = import_av()
        k = (self.info.rotation // 90) % 4
        coded = np.ascontiguousarray(np.rot90(rgb, -k)) if k else np.ascontiguousarray(rgb)
        out = av.VideoFrame.from_ndarray(coded, format="rgb24")
        kwargs = {}
        if self.info.color_range:
            kwargs["dst_color_range"] = self.info.color_range
        if self.info.colorspace != 2:
            kwargs["dst_colorspace"] = self.info.colorspace
        out = out.reformat(format=self.pix_fmt, **kwargs)
        out.pts = frame.pts
        out.time_base = self.info.time_base
        self._mux(self.video.encode(out))

    def copy(self, packet) -> None:
        """Mux one packet of a copied stream unchanged."""
        stream = self.copies.get(packet.stream.index)
        if stream is None:
            return
        packet.stream = stream
        self._mux([packet])

    def _mux(self, packets) -> None:
        av = import_av()
        try:
            self.container.mux(packets)
        except (av.FFmpegError, ValueError) as exc:
            raise VideoError(self.path, f"cannot write ({_ffmpeg_reason(exc)})") from None

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            self._mux(self.video.encode(None))
        finally:
            self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a half-written file may fail too; it is deleted anyway
            pass
