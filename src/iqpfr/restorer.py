"""``FaceRestorer``: whole-photo face restoration (detect, align, restore in batches, paste back).

    restorer = iqpfr.FaceRestorer.from_pretrained(device="auto")   # the embedded default model
    out = restorer.restore("photo.jpg")                 # fidelity="auto": each face by its own quality
    out.image            # np.ndarray (H, W, 3|4) RGB(A), the input's dtype; or the input's type
    out.faces[0].box     # per-face records: box, landmarks, affine, crop, restored, score, timings

``restore_batch`` and ``iter_restore`` batch faces from many photos through the network while a
thread pool reads, detects and pastes the others.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqpfr.face.detect import FaceDetector, create_detector
from iqpfr.face.pipeline import (
    FaceFilter,
    FaceRecord,
    aligned_face_record,
    crop_faces,
    find_faces,
    paste_faces,
)
from iqpfr.io import LoadedImage, from_array, from_pil, read_image, to_array, to_pil

# Restoration models that can ship inside the package, in order of preference: the default is the
# first one present in this build (a GPU-trained iqpfr-256 supersedes the CPU-trained iqpfr-128).
EMBEDDED_MODELS = ("iqpfr-256", "iqpfr-128")
# background up-scaling: bicubic ("none" is the same), or the super-resolution network
BG_UPSAMPLERS = ("resize", "none", "realesrgan")


class ModelUnavailableError(RuntimeError):
    """The requested restoration model or its weights cannot be loaded; the message says what to do."""


# ------------------------------------------------------------------------------------ model loading


def embedded_weights_path(name: str | None = None) -> Path:
    """Where the package ships the weights of ``name`` (default: the default model; may not exist)."""
    return Path(__file__).resolve().parent / "weights" / f"{name or default_model_name()}.safetensors"


def default_model_name() -> str:
    """The embedded model ``iqpfr restore`` uses without ``--model``/``--weights``: the first of
    ``EMBEDDED_MODELS`` shipped in this build (``EMBEDDED_MODELS[0]`` when none is)."""
    weights_dir = Path(__file__).resolve().parent / "weights"
    return next((n for n in EMBEDDED_MODELS if (weights_dir / f"{n}.safetensors").is_file()), EMBEDDED_MODELS[0])


def load_restoration_model(
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    *,
    random_init: bool = False,
    offline: bool = False,
) -> tuple[nn.Module, str]:
    """Build the restoration network; returns (model in eval mode on CPU, one-line description).

    Resolution order: ``weights`` as a .safetensors/.pth path or a zoo name (``iqpfr.weights``);
    ``model`` as a path or zoo name; ``model`` as an architecture with ``random_init``; the
    embedded default (``default_model_name()``). ``model`` also names the architecture of a bare weight file.
    Raises ModelUnavailableError with a one-line message.
    """
    from iqpfr.models.factory import create_model, list_models

    if random_init:
        if weights is not None:
            raise ModelUnavailableError("--random-init and --weights exclude each other")
        name = model or default_model_name()
        if name not in list_models():
            raise ModelUnavailableError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
        import torch

        with torch.random.fork_rng(devices=[]):  # seeded: a demo or test gives the same output every run
            torch.manual_seed(0)
            net = create_model(name)
        return net.eval(), f"{name} (RANDOMLY INITIALISED with seed 0: output is noise, for tests/demos only)"

    source = weights if weights is not None else model
    if source is None:
        name = default_model_name()
        path = embedded_weights_path(name)
        if not path.is_file():
            raise ModelUnavailableError(
                f"no default model is shipped in this build ({path} is missing); "
                "pass --weights PATH.safetensors (or a zoo name such as 'codeformer'), or "
                "--model iqpfr-tiny --random-init for a demo with a random network"
            )
        return _load_file(path, name), f"{name} ({path})"

    path, architecture = _resolve_source(source, offline)
    if weights is not None and model is not None:
        architecture = model
    return _load_file(path, architecture), f"{architecture or path.stem} ({path})"


def _resolve_source(source: str | os.PathLike, offline: bool) -> tuple[Path, str | None]:
    text = os.fspath(source)
    if Path(text).expanduser().is_file():
        return Path(text).expanduser(), None
    try:
        from iqpfr.weights import WeightsError, get_entry, resolve_weights
    except ImportError:  # pragma: no cover - the zoo ships with the package
        raise ModelUnavailableError(f"{text}: no such weight file") from None
    try:
        path = Path(resolve_weights(text, offline=offline))
    except (WeightsError, FileNotFoundError) as exc:
        raise ModelUnavailableError(str(exc)) from None
    try:
        architecture = get_entry(text).architecture
    except LookupError:
        architecture = None
    return path, architecture


def _load_file(path: Path, architecture: str | None) -> nn.Module:
    """Self-describing .safetensors need no architecture; official .pth files are recognised from
    their keys unless ``architecture`` (a preset name) says what they are."""
    from iqpfr.weights.checkpoint import load_model

    try:
        net = load_model(path, arch=architecture)
    except Exception as exc:  # a corrupt or mismatched file is reported in one line
        text = " ".join(str(exc).split())
        raise ModelUnavailableError(f"{path}: could not load weights ({type(exc).__name__}: {text})") from None
    return net.eval()


def model_input_size(model: nn.Module) -> int:
    """The face crop side S the network expects (``img_size``/``out_size`` attribute or config)."""
    for attr in ("img_size", "out_size", "input_size"):
        value = getattr(model, attr, None)
        if isinstance(value, int):
            return value
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        for key in ("img_size", "out_size", "input_size"):
            if isinstance(config.get(key), int):
                return int(config[key])
    return 512


# ---------------------------------------------------------------------------------------- results


@dataclass
class _InputKind:
    """How the caller gave the image, so the result comes back the same way."""

    kind: str  # "path" | "numpy" | "pil" | "tensor"
    channel_order: str = "rgb"
    dtype: Any = None
    shape: tuple = ()
    mode: str | None = None
    device: Any = None


@dataclass
class RestoreResult:
    """One restored photo.

    image:  the result in the input's form: numpy (H, W[, C]) with the input's dtype, channel order
            and alpha; a PIL image for PIL input; a (C, H, W) / (1, C, H, W) tensor for tensor input;
            an RGB(A) numpy array for a path.
    faces:  FaceRecord per restored face (box, landmarks, affine, crop, restored, score, timings).
    output: the result as a LoadedImage (native depth, alpha, metadata) for writing.
    notes:  things worth telling the user (no face found, conversions, skipped faces).
    """

    image: Any
    faces: list[FaceRecord]
    output: LoadedImage
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    source: Any = None
    extra: Any = None


@dataclass
class RestoreOptions:
    """Per-call settings shared by every photo of a batch (see ``FaceRestorer.restore``)."""

    fidelity: float | str = "auto"  # or a fixed w; "auto": per face, from its input quality (iqpfr.face.adaptive)
    quality: float | None = None
    upscale: float = 1.0
    aligned: bool = False
    face_filter: FaceFilter = field(default_factory=FaceFilter)
    color_fix: str = "none"
    grayscale: str = "auto"
    channel_order: str = "rgb"
    max_pixels: int | None = None
    bg_upsampler: str = "resize"
    face_upsample: bool = False


@dataclass
class _Job:
    position: int
    source: Any
    image: LoadedImage | None = None
    kind: _InputKind | None = None
    records: list[FaceRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    remaining: int = 0


# ------------------------------------------------------------------------------------ the restorer


class FaceRestorer:
    """Restore every face of whole photos with one network and one detector, both loaded once.

    model: a restoration ``nn.Module`` called as ``model(lq, w=..., quality=...)`` with lq (B, 3, S, S)
    in [-1, 1], returning an object with ``.image`` (B, 3, S, S) in about [-1, 1].
    detector: a FaceDetector or a name (``dlib-hog`` default, ``dlib-cnn``, ``retinaface``); built on
    first use, so aligned-only use needs no detector.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        detector: str | FaceDetector = "dlib-hog",
        description: str = "",
        offline: bool = False,
        upsampler: Any = None,
        cpu_kernels: bool = False,
    ):
        from iqpfr.utils.device import resolve_device

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.face_size = model_input_size(model)
        self.description = description or type(model).__name__
        self._detector_spec = detector
        self._offline = offline
        self._detector: FaceDetector | None = detector if isinstance(detector, FaceDetector) else None
        # an iqpfr.upsample.Upsampler, a zoo name / file to build one from on first use, or None
        self._upsampler_spec = upsampler
        self._upsampler = upsampler if upsampler is not None and not isinstance(upsampler, (str, os.PathLike)) else None
        self._cpu_kernels = cpu_kernels
        self.embedded_default = False  # set by from_pretrained for the package's own default model

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "auto",
        detector: str | FaceDetector = "dlib-hog",
        model: str | None = None,
        random_init: bool = False,
        offline: bool = False,
        precision: str = "fp32",
        backend: str = "torch",
        cpu_kernels: bool = False,
        upsampler: Any = None,
    ) -> FaceRestorer:
        """Load a restorer from a zoo name, a weight file, or the embedded default (``None``).

        ``model`` names the architecture for a bare weight file, or (with ``random_init=True``) the
        preset to build with random weights (tests and demos only). ``precision`` (``fp32`` reference,
        ``bf16``, ``auto``), ``backend`` (``torch``, ``onnxruntime``) and ``cpu_kernels`` (Winograd
        convolutions, fused GroupNorm+SiLU; CPU fp32) select a fast path of
        ``iqpfr.inference.prepare_for_inference``; the defaults run the network unchanged.
        ``upsampler``: the super-resolution network for ``bg_upsampler="realesrgan"`` and
        ``face_upsample`` (an ``iqpfr.upsample.Upsampler`` or a zoo name; default
        ``realesrgan-x4plus``, built on first use).
        """
        if random_init:
            architecture = model or (None if name_or_path is None else os.fspath(name_or_path))
            net, description = load_restoration_model(architecture, None, random_init=True)
        else:
            net, description = load_restoration_model(model, name_or_path, offline=offline)
        if precision != "fp32" or backend != "torch" or cpu_kernels:
            from iqpfr.inference import prepare_for_inference

            net = prepare_for_inference(
                net, device=device, precision=precision, backend=backend, cpu_kernels=cpu_kernels
            )
            description = f"{description} [{net.settings.label()}]"
        restorer = cls(net, device=device, detector=detector, description=description, offline=offline,
                       upsampler=upsampler, cpu_kernels=cpu_kernels)
        restorer.embedded_default = name_or_path is None and model is None and not random_init
        return restorer

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = create_detector(str(self._detector_spec), device=str(self.device), offline=self._offline)
        return self._detector

    def default_face_upsample(self) -> bool:
        """Whether ``face_upsample=None`` means on: for the embedded small default model (its 128-px
        faces are pasted several times larger) when the Real-ESRGAN weights are installed (the
        ``upsample`` extra) or an up-sampler was given."""
        if self._upsampler_spec is not None:
            return True
        if not (self.embedded_default and self.face_size < 512):
            return False
        import importlib.util

        from iqpfr.weights.realesrgan import PACKAGE_MODULE

        return importlib.util.find_spec(PACKAGE_MODULE) is not None

    @property
    def upsampler(self):
        """The ``iqpfr.upsample.Upsampler`` for background / face up-sampling, built on first use."""
        if self._upsampler is None:
            from iqpfr.upsample import DEFAULT_UPSAMPLER, Upsampler

            self._upsampler = Upsampler.from_pretrained(
                self._upsampler_spec or DEFAULT_UPSAMPLER, device=self.device, offline=self._offline,
                cpu_kernels=self._cpu_kernels,
            )
        return self._upsampler

    @upsampler.setter
    def upsampler(self, upsampler) -> None:
        self._upsampler = self._upsampler_spec = upsampler

    # -------------------------------------------------------------------------------- public API

    def restore(
        self,
        image: Any,
        *,
        fidelity: float | str = "auto",
        quality: float | None = None,
        upscale: float = 1.0,
        aligned: bool = False,
        only_center_face: bool = False,
        largest_face: bool = False,
        min_face_size: float = 0.0,
        face_filter: FaceFilter | None = None,
        color_fix: str = "none",
        grayscale: str = "auto",
        channel_order: str = "rgb",
        bg_upsampler: str = "resize",
        face_upsample: bool | None = None,
    ) -> RestoreResult:
        """Restore the faces of one photo.

        image: a path, a PIL image, a numpy array (H, W[, 1|3|4], uint8/uint16/float in [0, 1],
        ``channel_order`` "rgb" (default) or "bgr") or a tensor (C, H, W) / (1, C, H, W) in [0, 1] RGB.
        fidelity: w in [0, 1] (0 = quality, 1 = fidelity), or ``"auto"``: each face's own input
        quality (NIQE) sets w and how much of the restoration is used, so a clean face passes
        unchanged (``iqpfr.face.adaptive``; per-face values in ``faces[i].fidelity / .strength``).
        quality: target quality in [0, 1]
        (None = the model's default, 0.9). upscale: output scale. aligned: the image is an
        FFHQ-aligned face. color_fix: none|adain|wavelet. grayscale: auto|on|off.
        bg_upsampler: ``resize`` (bicubic, default; ``none`` the same) or ``realesrgan`` (the
        background through ``self.upsampler``). face_upsample: restored faces larger on the output
        than the network's crop go through ``self.upsampler`` before pasting (with ``"auto"``
        fidelity also the fidelity path); None: ``default_face_upsample()``.
        """
        options = self._options(
            fidelity, quality, upscale, aligned, only_center_face, largest_face, min_face_size, face_filter,
            color_fix, grayscale, channel_order, bg_upsampler, face_upsample,
        )
        results = list(self.iter_restore([image], options=options, batch_size=1, workers=1))
        _, result = results[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def restore_batch(self, images: Iterable[Any], *, batch_size: int = 8, workers: int = 2, **kwargs) -> list[RestoreResult]:
        """Restore many photos, sending faces from several photos through the network together.

        Takes the keyword arguments of ``restore``; raises the first per-image error.
        """
        options = self._options(**kwargs)
        results = []
        for _, result in self.iter_restore(images, options=options, batch_size=batch_size, workers=workers):
            if isinstance(result, BaseException):
                raise result
            results.append(result)
        return results

    def restore_video(
        self,
        source: str | os.PathLike,
        target: str | os.PathLike,
        *,
        tracking: bool = True,
        video_options: Any = None,
        progress: Callable[[int], None] | None = None,
        on_frame: Callable | None = None,
        **kwargs,
    ):
        """Restore every face of a video file into ``target``, streaming (``iqpfr.video``; needs
        ``pip install 'iqpfr[video]'``). Faces are tracked across frames and smoothed unless
        ``tracking=False``; the audio and subtitle streams are copied packet for packet.

        kwargs: those of ``restore`` (fidelity, quality, face filter, colour fix, grayscale;
        ``face_upsample`` defaults to off for videos). video_options: an ``iqpfr.video.VideoOptions``
        (codec, crf, start/duration/max_frames, overwrite, tracking parameters). Returns an
        ``iqpfr.video.VideoResult`` (frames, fps, tracks, timings); raises ``iqpfr.video.VideoError``.
        """
        from iqpfr.video.pipeline import VideoOptions, restore_video
        from iqpfr.video.tracking import TrackingOptions

        kwargs.setdefault("face_upsample", False)  # a super-resolution pass per face per frame: opt-in
        options = self._options(**kwargs)
        video_options = video_options or VideoOptions()
        if not tracking and video_options.tracking.enabled:
            video_options.tracking = TrackingOptions.independent(video_options.tracking.detect_side)
        return restore_video(self, source, target, options=video_options, restore_options=options,
                             progress=progress, on_frame=on_frame)

    @torch.inference_mode()
    def restore_aligned(
        self, faces: torch.Tensor, fidelity: float | torch.Tensor = 0.5, quality: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Model-only path: (B, 3, S, S) RGB in [0, 1] aligned faces -> restored, same shape and range."""
        lq = faces.to(self.device, torch.float32) * 2.0 - 1.0
        w = torch.as_tensor(fidelity, dtype=torch.float32, device=self.device).expand(lq.shape[0])
        q = None if quality is None else torch.as_tensor(quality, dtype=torch.float32, device=self.device).expand(lq.shape[0])
        out = self.model(lq, w=w, quality=q)
        image = out.image if hasattr(out, "image") else out
        return ((image.float().clamp(-1.0, 1.0) + 1.0) / 2.0).to(faces.device)

    def iter_restore(
        self,
        sources: Iterable[Any],
        *,
        options: RestoreOptions | None = None,
        batch_size: int = 8,
        workers: int = 2,
        finish: Callable[[RestoreResult], Any] | None = None,
    ) -> Iterator[tuple[int, RestoreResult | BaseException]]:
        """Yield ``(position, RestoreResult or the exception)`` for each source, in input order.

        Reading, detection and pasting (and ``finish(result)``, e.g. writing files, stored in
        ``result.extra``) run in a pool of ``workers`` threads while this thread runs the network on
        batches of up to ``batch_size`` faces gathered across photos.
        """
        options = options or RestoreOptions()
        batch_size = max(1, int(batch_size))
        if not options.aligned:
            _ = self.detector  # build it once here, not racing in the worker threads
        if options.face_upsample or (options.bg_upsampler == "realesrgan" and not options.aligned):
            _ = self.upsampler
        lookahead = max(2, 2 * workers) + batch_size
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="iqpfr-restore")
        sources_iter = enumerate(sources)
        exhausted = False
        preparing: deque[Future] = deque()
        waiting: deque[_Job] = deque()
        queue: deque[tuple[_Job, FaceRecord]] = deque()
        finishing: deque[tuple[_Job, Future]] = deque()
        try:
            while True:
                while not exhausted and len(preparing) + len(waiting) < lookahead:
                    try:
                        position, source = next(sources_iter)
                    except StopIteration:
                        exhausted = True
                        break
                    preparing.append(pool.submit(self._prepare, position, source, options))
                if len(queue) >= batch_size:
                    self._run_batch(queue, batch_size, options)
                elif preparing:
                    job = preparing.popleft().result()
                    waiting.append(job)
                    queue.extend((job, record) for record in job.records)
                elif queue:
                    self._run_batch(queue, batch_size, options)
                elif not waiting and not finishing:
                    break
                while waiting and waiting[0].remaining == 0:
                    job = waiting.popleft()
                    finishing.append((job, pool.submit(self._finish, job, options, finish)))
                while finishing and (finishing[0][1].done() or len(finishing) > lookahead or (
                    exhausted and not preparing and not queue and not waiting
                )):
                    job, future = finishing.popleft()
                    yield job.position, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -------------------------------------------------------------------------------- internals

    def _options(
        self,
        fidelity: float | str = "auto",
        quality: float | None = None,
        upscale: float = 1.0,
        aligned: bool = False,
        only_center_face: bool = False,
        largest_face: bool = False,
        min_face_size: float = 0.0,
        face_filter: FaceFilter | None = None,
        color_fix: str = "none",
        grayscale: str = "auto",
        channel_order: str = "rgb",
        bg_upsampler: str = "resize",
        face_upsample: bool | None = None,
    ) -> RestoreOptions:
        if fidelity != "auto" and not 0.0 <= float(fidelity) <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1] or 'auto', got {fidelity}")
        if quality is not None and not 0.0 <= float(quality) <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        if not float(upscale) > 0:
            raise ValueError(f"upscale must be positive, got {upscale}")
        if color_fix not in ("none", "adain", "wavelet"):
            raise ValueError(f"color_fix must be none|adain|wavelet, got {color_fix!r}")
        if grayscale not in ("auto", "on", "off"):
            raise ValueError(f"grayscale must be auto|on|off, got {grayscale!r}")
        if bg_upsampler not in BG_UPSAMPLERS:
            raise ValueError(f"bg_upsampler must be one of {', '.join(BG_UPSAMPLERS)}, got {bg_upsampler!r}")
        if face_upsample is None:
            face_upsample = self.default_face_upsample()
        if face_filter is None:
            face_filter = FaceFilter(only_center=only_center_face, largest=largest_face, min_size=min_face_size)
        return RestoreOptions(
            fidelity if fidelity == "auto" else float(fidelity), None if quality is None else float(quality), float(upscale), aligned, face_filter,
            color_fix, grayscale, channel_order, bg_upsampler=bg_upsampler, face_upsample=bool(face_upsample),
        )

    def _prepare(self, position: int, source: Any, options: RestoreOptions) -> _Job:
        job = _Job(position, source)
        try:
            start = time.perf_counter()
            job.image, job.kind = load_input(source, options.channel_order, max_pixels=options.max_pixels)
            job.notes.extend(job.image.notes)
            job.timings["read"] = time.perf_counter() - start
            if options.aligned:
                job.records = [aligned_face_record(job.image, self.face_size)]
            else:
                start = time.perf_counter()
                faces, notes = find_faces(job.image, self.detector, options.face_filter)
                job.notes.extend(notes)
                job.timings["detect"] = time.perf_counter() - start
                start = time.perf_counter()
                job.records = crop_faces(job.image, faces, self.face_size)
                job.timings["align"] = time.perf_counter() - start
                if not faces:
                    scale = "" if options.upscale == 1 else f", up-scaled x{options.upscale:g}"
                    job.notes.append(f"no face found: photo copied through{scale}")
            self._set_fidelity(job, options)
        except Exception as exc:  # reported per photo; the batch goes on
            job.error = exc
            job.records = []
        job.remaining = len(job.records)
        return job

    @staticmethod
    def _set_fidelity(job: _Job, options: RestoreOptions) -> None:
        """Each face's w (and, with ``fidelity="auto"``, its input NIQE and restoration strength)."""
        if options.fidelity != "auto":
            for record in job.records:
                record.fidelity = float(options.fidelity)
            return
        from iqpfr.face.adaptive import (
            QUALITY_SIDE,
            adaptive_fidelity,
            face_niqe,
            generative_share,
            restoration_strength,
        )
        from iqpfr.face.align import alignment_affine, warp_face

        start = time.perf_counter()
        for record in job.records:
            if options.aligned:
                face = job.image.pixels
            else:  # the input at the scorer's resolution, not the network's (often 128 px)
                face = warp_face(job.image.pixels, alignment_affine(record.landmarks, QUALITY_SIDE), QUALITY_SIDE,
                                 border="reflect")
            record.input_niqe = face_niqe(face)
            record.strength = restoration_strength(record.input_niqe)
            record.fidelity = adaptive_fidelity(record.strength)
            # the fidelity path needs the super-resolution network; without it the network does all
            record.generative = generative_share(record.input_niqe) if options.face_upsample else 1.0
        job.timings["input_quality"] = time.perf_counter() - start

    @torch.inference_mode()
    def _run_batch(self, queue: deque, batch_size: int, options: RestoreOptions) -> None:
        items = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        start = time.perf_counter()
        crops = torch.from_numpy(np.stack([record.crop for _, record in items])).permute(0, 3, 1, 2)
        lq = crops.to(self.device, torch.float32) * 2.0 - 1.0
        w = torch.tensor([record.fidelity for _, record in items], dtype=torch.float32, device=self.device)
        quality = None if options.quality is None else torch.full((len(items),), options.quality, device=self.device)
        try:
            out = self.model(lq, w=w, quality=quality)
            image = out.image if hasattr(out, "image") else out
            restored = ((image.float().clamp(-1.0, 1.0) + 1.0) / 2.0).permute(0, 2, 3, 1).cpu().numpy()
        except Exception as exc:  # a failing batch fails its photos, not the run
            for job, _ in items:
                job.error = job.error or RuntimeError(f"{_label(job.source)}: restoration network failed ({exc})")
                job.remaining -= 1
            return
        share = (time.perf_counter() - start) / len(items)
        for (job, record), face in zip(items, restored):
            record.restored = np.ascontiguousarray(face)
            record.timings["model"] = share
            job.timings["model"] = job.timings.get("model", 0.0) + share
            job.remaining -= 1

    def _upsample_faces(self, job: _Job, options: RestoreOptions) -> None:
        """Restored faces at k x the crop side through the super-resolution network, where they are
        pasted larger than the crop; with ``fidelity="auto"`` mixed with the fidelity path (the input
        crop through the same network) by ``record.generative``."""
        from iqpfr.face.pipeline import FACE_UPSAMPLE_MIN_STRETCH, face_upsample_factor

        upsampler = self.upsampler
        scale = int(upsampler.scale)
        width, height = job.image.size
        for record in job.records:
            if record.restored is None or record.strength <= 0:
                continue
            side = record.restored.shape[0]
            if options.aligned:
                footprint = max(width, height) * options.upscale / side
                factor = 1 if footprint < FACE_UPSAMPLE_MIN_STRETCH else int(min(scale, np.ceil(footprint)))
            else:
                factor = face_upsample_factor(side, record.affine, options.upscale, scale)
            share = float(record.generative)
            if share < 1.0:
                factor = scale  # the fidelity path is a restoration in itself: always at the network's scale
            if factor <= 1:
                continue
            face = upsampler(record.restored, factor) if share > 0 else 0.0
            if share < 1.0:
                face = share * face + (1.0 - share) * upsampler(record.crop, factor)
            record.restored = np.ascontiguousarray(np.clip(face, 0.0, 1.0), dtype=np.float32)

    def _finish(self, job: _Job, options: RestoreOptions, finish: Callable | None) -> RestoreResult | BaseException:
        if job.error is not None:
            return job.error
        try:
            background = None
            if options.bg_upsampler == "realesrgan" and not options.aligned:
                start = time.perf_counter()
                background = upsampled_background(job.image, options.upscale, self.upsampler)
                job.timings["background"] = time.perf_counter() - start
            if options.face_upsample:
                start = time.perf_counter()
                self._upsample_faces(job, options)
                job.timings["face_upsample"] = time.perf_counter() - start
            start = time.perf_counter()
            output = paste_faces(
                job.image, job.records, upscale=options.upscale, color=options.color_fix,
                grayscale=options.grayscale, aligned=options.aligned, background=background,
            )
            job.timings["paste"] = time.perf_counter() - start
            image = convert_output(output, job.kind)
            result = RestoreResult(image, job.records, output, job.notes, job.timings, job.source)
            if finish is not None:
                start = time.perf_counter()
                result.extra = finish(result)
                job.timings["write"] = time.perf_counter() - start
            return result
        except Exception as exc:
            return exc


# ------------------------------------------------------------------------------ input conversion


def upsampled_background(image: LoadedImage, upscale: float, upsampler) -> LoadedImage:
    """``image`` up-scaled by ``upscale`` through ``upsampler`` (which resizes an alpha channel bicubically)."""
    if image.alpha is None:
        return image.with_pixels(upsampler.upscale(image.pixels, upscale), None)
    out = upsampler.upscale(np.dstack([image.pixels, image.alpha]), upscale)
    return image.with_pixels(np.ascontiguousarray(out[:, :, :3]), np.ascontiguousarray(out[:, :, 3]))


def _label(source: Any) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def load_input(
    source: Any, channel_order: str = "rgb", *, max_pixels: int | None = None
) -> tuple[LoadedImage, _InputKind]:
    """Turn a path, PIL image, numpy array or tensor into a LoadedImage plus how to convert back."""
    if isinstance(source, (str, os.PathLike)):
        limit = {} if max_pixels is None else {"max_pixels": int(max_pixels)}
        return read_image(source, **limit), _InputKind("path", channel_order)
    if isinstance(source, np.ndarray):
        image = from_array(source, channel_order=channel_order)
        return image, _InputKind("numpy", channel_order, source.dtype, source.shape)
    if isinstance(source, torch.Tensor):
        tensor = source.detach()
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise ValueError(f"expected a (C, H, W) or (1, C, H, W) tensor with C in 1, 3, 4; got {tuple(source.shape)}")
        array = tensor.permute(1, 2, 0).cpu().numpy()
        if array.dtype not in (np.uint8, np.uint16):
            array = array.astype(np.float32)
        image = from_array(array, channel_order=channel_order)
        return image, _InputKind("tensor", channel_order, source.dtype, tuple(source.shape), device=source.device)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(source, Image.Image):
        return from_pil(source), _InputKind("pil", mode=source.mode)
    raise TypeError(f"cannot restore an object of type {type(source).__name__}; pass a path, PIL image, array or tensor")


def convert_output(output: LoadedImage, kind: _InputKind) -> Any:
    """The restored LoadedImage in the caller's input form (see RestoreResult.image)."""
    if kind.kind == "path":
        return to_array(output, channel_order=kind.channel_order)
    if kind.kind == "pil":
        return to_pil(output)
    if kind.kind == "numpy":
        gray = len(kind.shape) == 2 or (len(kind.shape) == 3 and kind.shape[2] == 1)
        array = to_array(output, channel_order=kind.channel_order, dtype=kind.dtype, gray=gray)
        if len(kind.shape) == 3 and kind.shape[2] == 1:
            array = array[:, :, None]
        return array
    floating = kind.dtype.is_floating_point
    array = to_array(output, channel_order=kind.channel_order, dtype=np.float32 if floating else None,
                     gray=kind.shape[-3] == 1)
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if not floating and kind.dtype == torch.uint8 and tensor.dtype != torch.uint8:
        tensor = (tensor.float() / 257.0).round().to(torch.uint8)
    tensor = tensor.to(kind.dtype)
    if len(kind.shape) == 4:
        tensor = tensor[None]
    return tensor.to(kind.device)
