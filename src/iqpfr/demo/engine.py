"""Restoration for the web page, without Gradio: what the page and its API endpoints call (photos,
and videos through ``iqpfr.video`` as ``iqpfr restore`` does them).

    engine = DemoEngine(PrivateFolder(), Limits())
    for photo in engine.restore([path], Settings(fidelity=0.5)):
        photo.output, photo.faces, photo.error      # PNG paths in the private folder, or one sentence

Each photo goes through ``FaceRestorer.iter_restore`` with the options ``iqpfr restore`` builds
from the same settings, and the result is written with the same writer (lossless PNG), so the
page's image equals the CLI's ``--ext png`` output. Problems come back as one sentence per photo
(``PhotoResult.error``); the rest of a batch goes on. Only files inside the private folder are read.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from iqpfr.demo.limits import LimitError, Limits, image_size
from iqpfr.demo.settings import FACE_SELECTIONS, ModelChoice, PageDefaults, model_capabilities, model_choices
from iqpfr.demo.uploads import OutsideFolderError, PrivateFolder


class DemoError(RuntimeError):
    """A problem that stops a whole request (a model that cannot load, bad settings); one sentence."""


class Cancelled(Exception):
    """The person pressed Cancel (raised inside a video's progress callback to stop it)."""


CANCELLED = "Cancelled before it finished: nothing was written for it."


@dataclass
class Settings:
    """The page's controls. ``model``: a ``ModelChoice.label`` (None: the first, the embedded default);
    ``fidelity``: ``"auto"`` or w in [0, 1]; ``quality``: target in [0, 1] or None (the model's);
    ``face_upsample``: None = the CLI's default for the model. Other defaults are the CLI's."""

    model: str | None = None
    fidelity: float | str = field(default_factory=lambda: PageDefaults.from_cli().fidelity)
    quality: float | None = None
    upscale: float = field(default_factory=lambda: PageDefaults.from_cli().upscale)
    detector: str = field(default_factory=lambda: PageDefaults.from_cli().detector)
    face_selection: str = field(default_factory=lambda: PageDefaults.from_cli().face_selection)
    color_fix: str = field(default_factory=lambda: PageDefaults.from_cli().color_fix)
    grayscale: str = field(default_factory=lambda: PageDefaults.from_cli().grayscale)
    bg_upsampler: str = field(default_factory=lambda: PageDefaults.from_cli().bg_upsampler)
    face_upsample: bool | None = None


@dataclass
class FaceView:
    """One face: ``image`` is a PNG of the aligned input crop | the restored face (as pasted)."""

    index: int
    image: Path
    fidelity: float | None
    strength: float

    def caption(self) -> str:
        text = f"face {self.index + 1}: before | after"
        if self.fidelity is not None:
            text += f", w {self.fidelity:.2f}"
        if self.strength < 1.0:
            text += f", {self.strength:.0%} of the restoration used (auto)"
        return text


@dataclass
class PhotoResult:
    """One photo of a request. ``output``: the restored photo (PNG, lossless); ``before``: the input
    as an 8-bit PNG at the output size (for the before | after view); ``error``: one sentence."""

    name: str
    kind: str = "photo"  # or "video"
    output: Path | None = None
    before: Path | None = None
    faces: list[FaceView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class DemoEngine:
    """Models, detector and up-sampler loaded once and kept; photos restored one at a time.

    folder: the private folder (inputs must lie inside it; results are written there).
    extra_weights: weight files the person starting the page offered (``iqpfr demo --weights``).
    """

    def __init__(self, folder: PrivateFolder, limits: Limits | None = None, *, device: str = "auto",
                 extra_weights: list[str | os.PathLike] = ()):
        self.folder = folder
        self.limits = limits or Limits()
        self.device = device
        self.defaults = PageDefaults.from_cli()
        self.choices: list[ModelChoice] = model_choices(list(extra_weights))
        self._nets: dict[str | None, tuple] = {}  # weights -> (module, description)
        self._restorers: dict[tuple, object] = {}
        self._upsampler = None
        self._lock = threading.RLock()
        self._active: set[threading.Event] = set()  # one per running request; Cancel sets them all

    def cancel(self) -> None:
        """Stop the running requests: before their next photo, or a video at its next frames."""
        for token in list(self._active):
            token.set()

    # ------------------------------------------------------------------------------- models

    @property
    def model_labels(self) -> list[str]:
        return [c.label for c in self.choices]

    def choice(self, label: str | None) -> ModelChoice:
        if label is None:
            return self.choices[0]
        for choice in self.choices:
            if choice.label == label:
                return choice
        raise DemoError(f"Unknown model {label!r}; this page offers: {', '.join(self.model_labels)}.")

    def restorer(self, label: str | None = None, detector: str | None = None):
        """The FaceRestorer for a menu entry and detector (loaded on first use, then kept)."""
        from iqpfr.restorer import FaceRestorer, ModelUnavailableError, load_restoration_model

        choice = self.choice(label)
        detector = detector or self.defaults.detector
        key = (choice.weights, detector)
        with self._lock:
            if key in self._restorers:
                return self._restorers[key]
            if choice.weights not in self._nets:
                try:
                    self._nets[choice.weights] = load_restoration_model(None, choice.weights, offline=True)
                except ModelUnavailableError as exc:
                    raise DemoError(_sentence(f"Model {choice.label} is not available: {exc}")) from None
            net, description = self._nets[choice.weights]
            restorer = FaceRestorer(net, device=self.device, detector=detector, description=description, offline=True)
            # the CLI's rule for the default face up-sampling depends on this flag (see from_pretrained)
            restorer.embedded_default = choice.kind == "embedded"
            self._restorers[key] = restorer
            return restorer

    def capabilities(self, label: str | None = None) -> dict:
        """Which controls matter for a model: ``fidelity``, ``quality`` (bools), ``default_quality``,
        ``face_upsample`` (the CLI's default for it) and ``face_size``."""
        restorer = self.restorer(label)
        caps = model_capabilities(restorer.model)
        caps["default_quality"] = float(getattr(restorer.model, "default_quality", 0.9))
        caps["face_upsample"] = bool(restorer.default_face_upsample())
        caps["face_size"] = int(restorer.face_size)
        caps["description"] = restorer.description
        return caps

    def _ensure_upsampler(self, restorer) -> None:
        """The super-resolution network, built as ``iqpfr restore`` builds it (its tile settings)."""
        from iqpfr.upsample import DEFAULT_UPSAMPLER, Upsampler
        from iqpfr.weights import WeightsError

        with self._lock:
            if self._upsampler is None:
                try:
                    self._upsampler = Upsampler.from_pretrained(
                        DEFAULT_UPSAMPLER, device=restorer.device, tile=self.defaults.bg_tile,
                        overlap=self.defaults.bg_tile_overlap, offline=True,
                    )
                except (WeightsError, FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
                    raise DemoError(_sentence(
                        f"The Real-ESRGAN up-sampler is not available ({' '.join(str(exc).split())}); "
                        "install it with pip install 'iqpfr[upsample]', or turn off face up-sampling and "
                        "the Real-ESRGAN background")) from None
            restorer.upsampler = self._upsampler

    # ----------------------------------------------------------------------------- restoring

    def options(self, settings: Settings, restorer):
        """The ``RestoreOptions`` ``iqpfr restore`` would build from the same settings."""
        from iqpfr.face.pipeline import FaceFilter
        from iqpfr.restorer import RestoreOptions

        fidelity = settings.fidelity
        if fidelity != "auto":
            try:
                fidelity = float(fidelity)
            except (TypeError, ValueError):
                raise DemoError(f"Fidelity must be auto or a number in [0, 1], got {fidelity!r}.") from None
            if not 0.0 <= fidelity <= 1.0:
                raise DemoError(f"Fidelity must be in [0, 1], got {fidelity:g}.")
        quality = settings.quality
        if quality is not None and not 0.0 <= float(quality) <= 1.0:
            raise DemoError(f"The quality target must be in [0, 1], got {quality:g}.")
        try:
            self.limits.check_upscale(float(settings.upscale))
        except LimitError as exc:
            raise DemoError(str(exc)) from None
        if settings.face_selection not in FACE_SELECTIONS:
            raise DemoError(f"Face selection must be one of: {', '.join(FACE_SELECTIONS)}.")
        from iqpfr.demo.settings import cli_choices

        for name, value in (("color_fix", settings.color_fix), ("grayscale", settings.grayscale),
                            ("bg_upsampler", settings.bg_upsampler)):
            if value not in cli_choices(name):
                raise DemoError(f"{name.replace('_', ' ').capitalize()} must be one of: "
                                f"{', '.join(cli_choices(name))}; got {value!r}.")
        face_upsample = settings.face_upsample
        if face_upsample is None:
            face_upsample = restorer.default_face_upsample()
        return RestoreOptions(
            fidelity=fidelity, quality=None if quality is None else float(quality), upscale=float(settings.upscale),
            aligned=False,
            face_filter=FaceFilter(only_center=settings.face_selection == FACE_SELECTIONS[1],
                                   largest=settings.face_selection == FACE_SELECTIONS[2],
                                   max_faces=self.limits.max_faces),
            color_fix=settings.color_fix, grayscale=settings.grayscale, bg_upsampler=settings.bg_upsampler,
            face_upsample=bool(face_upsample),
        )

    def prepare(self, settings: Settings):
        """Load what ``settings`` need; returns (restorer, options). Raises DemoError."""
        from iqpfr.face.detect import DetectorUnavailable

        if settings.detector not in _detectors():
            raise DemoError(f"Detector must be one of: {', '.join(_detectors())}; got {settings.detector!r}.")
        restorer = self.restorer(settings.model, settings.detector)
        options = self.options(settings, restorer)
        if options.face_upsample or options.bg_upsampler == "realesrgan":
            self._ensure_upsampler(restorer)
        try:
            _ = restorer.detector
        except DetectorUnavailable as exc:
            raise DemoError(_sentence(f"The {settings.detector} face detector is not available: {exc}")) from None
        return restorer, options

    def restore(self, paths: list[str | os.PathLike], settings: Settings | None = None, *,
                progress: Callable[[str, int, int], None] | None = None) -> Iterator[PhotoResult]:
        """Restore uploaded photos and videos one at a time, yielding a PhotoResult each (errors
        inside it). ``progress(name, done, total)`` hears of a video's frames (total 0: unknown).

        Raises DemoError before the first file when the request as a whole cannot run.
        """
        settings = settings or Settings()
        paths = [p for p in paths if p]
        try:
            self.limits.check_count(len(paths))
        except LimitError as exc:
            raise DemoError(str(exc)) from None
        restorer, options = self.prepare(settings)
        self.folder.sweep()
        out_dir = self.folder.new_job_folder()
        token = threading.Event()
        self._active.add(token)
        try:
            for path in paths:
                if token.is_set():
                    yield PhotoResult(Path(path).name, error=f"{Path(path).name}: {CANCELLED}")
                    continue
                yield self.restore_one(path, restorer, options, out_dir, cancel=token, progress=progress)
        finally:
            self._active.discard(token)

    def restore_one(self, path, restorer, options, out_dir: Path, *, cancel: threading.Event | None = None,
                    progress: Callable[[str, int, int], None] | None = None) -> PhotoResult:
        name = Path(path).name
        result = PhotoResult(name)
        start = time.perf_counter()
        try:
            source = self.folder.inside(path)
            self.limits.check_file_size(name, source)
            if _is_video(source):
                result.kind = "video"
                self._restore_video(result, source, restorer, options, out_dir, cancel, progress)
            else:
                size = image_size(source)
                if size is not None:
                    self.limits.check_size(name, size[0], size[1], options.upscale)
                with self._lock:  # one photo through the network at a time
                    _, restored = next(iter(restorer.iter_restore(
                        [source], options=options, batch_size=self.defaults.batch_size,
                        workers=self.defaults.workers)))
                if isinstance(restored, BaseException):
                    raise restored
                self._write(result, restored, out_dir, options)
        except (OutsideFolderError, LimitError) as exc:
            result.error = _sentence(str(exc))
        except Cancelled:
            result.error = f"{name}: {CANCELLED}"
        except Exception as exc:  # one sentence naming the file, never a traceback on the page
            result.error = _error_sentence(exc, name, str(path))
        result.seconds = time.perf_counter() - start
        return result

    def _restore_video(self, result: PhotoResult, source: Path, restorer, options, out_dir: Path,
                       cancel: threading.Event | None, progress) -> None:
        """A video through ``iqpfr.video`` with the settings ``iqpfr restore`` gives videos."""
        from iqpfr.video.io import output_suffix, probe_video
        from iqpfr.video.pipeline import VideoOptions, restore_video

        info = probe_video(source)
        self.limits.check_size(result.name, info.width, info.height, 1.0)
        rate = float(info.average_rate) if info.average_rate else 0.0
        seconds = info.duration or (info.estimated_frames() / rate if rate else 0.0)
        self.limits.check_video(result.name, seconds)
        # as in `iqpfr restore`: no Real-ESRGAN on every face of every frame unless asked on the command line
        options = dataclasses.replace(options, face_upsample=False)
        video_options = VideoOptions(batch_size=self.defaults.batch_size)
        if not seconds:  # length unknown: the page's limit as a frame count, said so
            video_options.max_frames = int(self.limits.max_video_seconds * (rate or 30))
            result.notes.append(f"{result.name}: its length is unknown; at most {video_options.max_frames} frames "
                                "are restored.")
        total = info.estimated_frames()
        if video_options.max_frames:
            total = min(total or video_options.max_frames, video_options.max_frames)
        done = 0

        def frames_written(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress(result.name, done, total)
            if cancel is not None and cancel.is_set():
                raise Cancelled

        folder = out_dir / f"{len(list(out_dir.iterdir())):02d}"
        folder.mkdir(mode=0o700)
        target = folder / f"{Path(result.name).stem or 'video'}_restored{output_suffix(source, info.format_name)}"
        with self._lock:
            video = restore_video(restorer, source, target, options=video_options, restore_options=options,
                                  progress=frames_written)
        result.output = target
        result.notes.extend(f"{result.name}: {note}" for note in video.notes)
        if not video.tracks:
            result.notes.append(f"No face found in {result.name}: the video is re-encoded unchanged.")
        result.notes.append(f"{result.name}: {video.frames} frames, {len(video.tracks)} face track(s), "
                            f"{video.fps:.1f} frames/s.")

    def _write(self, result: PhotoResult, restored, out_dir: Path, options) -> None:
        import cv2
        import numpy as np

        from iqpfr.io import write_image

        stem = Path(result.name).stem or "photo"
        folder = out_dir / f"{len(list(out_dir.iterdir())):02d}"  # same names in one request stay apart
        folder.mkdir(mode=0o700)
        result.output = folder / f"{stem}_restored.png"
        result.notes.extend(f"{result.name}: {n}" for n in restored.notes)
        result.notes.extend(write_image(result.output, restored.output))
        if not restored.faces:
            scale = "" if options.upscale == 1 else f" (up-scaled x{options.upscale:g})"
            result.notes = [f"No face found in {result.name}: the photo is returned unchanged{scale}."]
        # the before | after view: the input at the output's size, 8 bit (previews only)
        width, height = restored.output.size
        source = _read_rgb8(restored.source)
        if source.shape[:2] != (height, width):
            source = cv2.resize(source, (width, height), interpolation=cv2.INTER_CUBIC)
        result.before = folder / f"{stem}_before.png"
        _write_preview(result.before, source)
        for record in restored.faces:
            if record.restored is None:
                continue
            after = np.clip(record.restored, 0.0, 1.0)
            side = after.shape[0]
            crop = record.crop if record.crop.shape[0] == side else cv2.resize(
                record.crop, (side, side), interpolation=cv2.INTER_CUBIC)
            crop = np.clip(crop, 0.0, 1.0)
            if record.strength < 1.0:  # as pasted: that share of the restoration over the input
                after = record.strength * after + (1.0 - record.strength) * crop
            gap = np.ones((side, max(2, side // 64), 3), np.float32)
            pair = np.round(np.concatenate([crop, gap, after], axis=1) * 255).astype(np.uint8)
            face_path = folder / f"{stem}_face{record.index:02d}.png"
            _write_preview(face_path, pair)
            result.faces.append(FaceView(record.index, face_path, record.fidelity, float(record.strength)))


def _is_video(path: Path) -> bool:
    """A video by its first bytes or suffix (False when the video extra's module is absent)."""
    try:
        from iqpfr.video.io import is_video_file
    except ImportError:
        return False
    return is_video_file(path)


def _detectors() -> tuple:
    from iqpfr.demo.settings import cli_choices

    return cli_choices("detector")


def _read_rgb8(path) -> object:
    from iqpfr.io import read_image

    return read_image(path).rgb8()


def _write_preview(path: Path, rgb) -> None:
    """A quick PNG (fast compression) for what is only looked at on the page."""
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"{path.name}: could not encode a preview")
    path.write_bytes(data.tobytes())


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    return text if text.endswith((".", "!", "?")) else text + "."


def _error_sentence(exc: BaseException, name: str, path: str) -> str:
    """One sentence for a failed photo, naming the uploaded file (never the private folder's path)."""
    from iqpfr.face.detect import DetectorUnavailable
    from iqpfr.io import ImageReadError

    if isinstance(exc, ImageReadError):
        return _sentence(f"{name} could not be read: {exc.reason}")
    if type(exc).__name__ == "VideoError":
        return _sentence(f"{name} could not be read as a video: {exc.reason}")
    if type(exc).__name__ == "VideoUnavailable":
        return _sentence(f"{name}: videos need PyAV: pip install 'iqpfr[video]'")
    text = " ".join(str(exc).split()).replace(str(Path(path).resolve()), name).replace(str(path), name)
    if isinstance(exc, DetectorUnavailable):
        return _sentence(f"The face detector is not available: {text}")
    if isinstance(exc, MemoryError):
        return _sentence(f"{name}: out of memory while restoring (try a smaller upscale)")
    return _sentence(text if name in text else f"{name}: restoration failed ({type(exc).__name__}: {text})")
