"""Fast inference for every restoration network: one switch over batching, memory format, precision
and compilation, with fp32 eager as the reference.

    runner = prepare_for_inference(model, precision="auto", compile=False, batch_size=8)
    out = runner(lq, w=0.5)          # RestoreOutput, float32 NCHW, same function as model(lq, w=0.5)

What each setting does (all compute the same function up to rounding; tolerances are checked by
``tests/test_fast_inference.py`` and measured by ``benchmarks/inference.py``):

* batching: inputs are run in chunks of ``batch_size`` (per-sample ``w``/``quality`` are sliced along).
* ``channels_last``: NHWC activations and weights; oneDNN (CPU) and cuDNN (GPU) convolutions are much
  faster in that layout.
* ``precision="bf16"``: ``torch.autocast`` to bfloat16 for convolutions and matmuls, except the parts
  that choose discrete codes (VQGAN encoder, code-prediction Transformer, logits head), which stay
  float32 so that rounding does not flip code indices (see ``FP32_SUBMODULES``); GFPGAN has no codes
  and runs wholly in bf16. ``"bf16-full"`` also runs the encoder in bf16 (faster; a few codes may
  differ from fp32). ``"auto"`` picks bf16 on CUDA and on CPUs with AMX or AVX-512-BF16, fp32
  elsewhere (bf16 is emulated, hence slower, on other CPUs).
* ``compile``: ``torch.compile`` (Inductor; on CPU with weight freezing). Shapes are kept fixed by
  padding the last chunk, so one compilation serves every call.
* ``cuda_graphs``: CUDA graphs on top of ``compile`` (removes per-kernel launch overhead at small batch).
* ``cpu_kernels``: iqpfr's own CPU kernels (``iqpfr.kernels``, compiled on first use): 3x3 convolutions
  by Winograd F(4x4, 3x3), a quarter of the multiply-adds, and GroupNorm+SiLU and residual adds fused.
  fp32 on the CPU only; outputs differ from the reference by about 1e-5 relative (code indices equal).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqpfr.models.outputs import RestoreOutput
from iqpfr.utils.device import resolve_device

PRECISIONS = ("auto", "fp32", "bf16", "bf16-full")

# Submodules (attribute names on the network) that choose discrete codes: under bf16 they stay float32,
# because rounding flips code indices (an argmax over logits), and one flipped code changes a whole
# 32x32 patch of the face. The Transformer and head cost ~1% of the FLOPs.
FP32_DECISION = ("feat_emb", "ft_layers", "idx_pred_layer", "quality_adapter", "quality_embed")
# ``bf16`` also keeps the VQGAN encoder (whose output the codes are predicted from) in float32, so the
# predicted codes match fp32; ``bf16-full`` runs it in bf16 too (faster, a few codes may differ).
FP32_SUBMODULES = {"bf16": ("encoder", *FP32_DECISION), "bf16-full": FP32_DECISION}


def cpu_has_fast_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (Intel AMX or AVX-512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``auto`` to ``fp32`` or ``bf16`` for ``device``; other values pass through (validated)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def _float32_forward(forward: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    def up(x: Any) -> Any:
        return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    device_type = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
    with torch.autocast(device_type=device_type, enabled=False):
        return forward(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})


def keep_float32(module: nn.Module) -> None:
    """Run ``module`` and every submodule in float32, even inside a bf16 autocast region.

    Every submodule is wrapped (not only ``module`` itself) because networks also call their parts
    through other methods (e.g. ``encoder.forward_with_skips``), which bypass ``module.forward``.
    """
    for sub in module.modules():
        if isinstance(sub, (nn.ModuleList, nn.ModuleDict)) or getattr(sub, "_iqpfr_float32", False):
            continue  # containers are iterated, never called
        sub.forward = functools.partial(_float32_forward, sub.forward)
        sub._iqpfr_float32 = True


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """Resolved settings of an ``InferenceRunner`` (what actually runs)."""

    device: str
    precision: str
    channels_last: bool
    compile: bool
    cuda_graphs: bool
    batch_size: int
    backend: str = "torch"
    workers: int = 1
    cpu_kernels: bool = False

    def label(self) -> str:
        if self.backend == "onnxruntime":
            parallel = f" x{self.workers}" if self.workers > 1 else ""
            return f"onnxruntime {self.precision} b{self.batch_size}{parallel}"
        parts = [self.precision, "channels_last" if self.channels_last else "nchw"]
        parts += ["cpu_kernels"] if self.cpu_kernels else []
        parts += ["compiled"] if self.compile else ["eager"]
        parts += ["cuda_graphs"] if self.cuda_graphs else []
        return f"{'+'.join(parts)} b{self.batch_size}"


def _slice_per_sample(value: Any, start: int, stop: int, batch: int) -> Any:
    """Rows start:stop of a per-sample (B,) tensor; scalars and None pass through."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch and batch > 1:
        return value[start:stop]
    return value


def _pad_rows(x: Any, rows: int) -> Any:
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or rows == 0:
        return x
    return torch.cat([x, x[-1:].expand(rows, *x.shape[1:])])


class InferenceRunner(nn.Module):
    """Fast path around a restoration network (see the module docstring), itself a drop-in network.

    ``runner(lq, w=None, quality=None) -> RestoreOutput``: lq (B, 3, S, S) in [-1, 1] on any device;
    ``w``/``quality`` as the network accepts them (float or (B,) tensor). Every tensor of the result is
    on ``settings.device``, float32 (indices int64), contiguous NCHW, with B rows. ``config`` is the
    wrapped network's, so code that reads the face size from it (``FaceRestorer``) works unchanged.
    """

    def __init__(self, model: nn.Module, settings: InferenceSettings) -> None:
        super().__init__()
        self.model = model
        self.config = getattr(model, "config", None)
        self.settings = settings
        self.device = torch.device(settings.device)
        forward: Callable[..., RestoreOutput] = model
        if settings.compile:
            if settings.cuda_graphs:
                options = {"triton.cudagraphs": True}
            else:
                options = {"freezing": True} if self.device.type == "cpu" else {}
            forward = torch.compile(model, dynamic=False, options=options)
        # not a registered submodule: the compiled wrapper shares the model's parameters
        object.__setattr__(self, "_forward", forward)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.settings.precision.startswith("bf16"):
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run_chunk(self, lq: torch.Tensor, w: Any, quality: Any) -> RestoreOutput:
        n = lq.shape[0]
        fixed = self.settings.compile or self.settings.cuda_graphs
        pad = self.settings.batch_size - n if fixed else 0
        if fixed and w is not None and not isinstance(w, torch.Tensor):
            # a Python float would be baked into the compiled graph (one recompilation per value)
            w = torch.full((n,), float(w), device=self.device)
        # pad per-sample tensors only; a broadcast (1,) or () value stays as it is
        lq, w, quality = (
            _pad_rows(t, pad) if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == n else t
            for t in (lq, w, quality)
        )
        if self.settings.channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        if self.settings.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode(), self._autocast():
            out = self._forward(lq, w=w, quality=quality)
        values = {}
        for field in dataclasses.fields(out):
            t = getattr(out, field.name)
            if isinstance(t, torch.Tensor):
                t = t[:n]
                t = t.float() if t.is_floating_point() else t
                # clone: CUDA-graph outputs live in buffers that the next replay overwrites
                t = t.contiguous().clone() if self.settings.cuda_graphs else t.contiguous()
            values[field.name] = t
        return RestoreOutput(**values)

    def forward(
        self,
        lq: torch.Tensor,
        w: float | torch.Tensor | None = None,
        quality: float | torch.Tensor | None = None,
    ) -> RestoreOutput:
        batch = lq.shape[0]
        lq = lq.to(self.device, torch.float32)
        w = w.to(self.device) if isinstance(w, torch.Tensor) else w
        quality = quality.to(self.device) if isinstance(quality, torch.Tensor) else quality
        chunks = []
        for start in range(0, batch, self.settings.batch_size):
            stop = min(start + self.settings.batch_size, batch)
            chunks.append(
                self._run_chunk(
                    lq[start:stop],
                    _slice_per_sample(w, start, stop, batch),
                    _slice_per_sample(quality, start, stop, batch),
                )
            )
        if len(chunks) == 1:
            return chunks[0]
        merged = {}
        for field in dataclasses.fields(RestoreOutput):
            parts = [getattr(c, field.name) for c in chunks]
            merged[field.name] = None if parts[0] is None else torch.cat(parts)
        return RestoreOutput(**merged)


class OnnxRuntimeRunner(nn.Module):
    """The network exported to ONNX (in a temporary folder) and run by onnxruntime on the CPU.

    Same call as ``InferenceRunner``; ``w``/``quality`` default to the network's own defaults. The
    result holds ``image`` only (no logits / indices).
    """

    def __init__(self, model: nn.Module, settings: InferenceSettings) -> None:
        import tempfile

        import onnxruntime as ort

        from iqpfr.export import export_onnx

        super().__init__()
        self.config = getattr(model, "config", None)
        self.settings = settings
        self.device = torch.device("cpu")
        self.default_w = float(getattr(model, "default_w", 0.5))
        self.default_quality = float(getattr(model, "default_quality", 0.9))
        self._tmp = tempfile.TemporaryDirectory(prefix="iqpfr-onnx-")
        path = Path(self._tmp.name) / "model.onnx"
        export_onnx(model, path, batch=min(settings.batch_size, 2))
        options = ort.SessionOptions()
        # with several workers each chunk runs on its share of the threads, all chunks at once
        options.intra_op_num_threads = max(1, torch.get_num_threads() // settings.workers)
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(
        self,
        lq: torch.Tensor,
        w: float | torch.Tensor | None = None,
        quality: float | torch.Tensor | None = None,
    ) -> RestoreOutput:
        batch = lq.shape[0]

        def per_sample(value: Any, default: float) -> np.ndarray:
            value = default if value is None else value
            return torch.as_tensor(value, dtype=torch.float32).cpu().reshape(-1).expand(batch).numpy()

        lq_np = lq.detach().to("cpu", torch.float32).numpy()
        w_np, q_np = per_sample(w, self.default_w), per_sample(quality, self.default_quality)
        def run(start: int) -> torch.Tensor:
            rows = slice(start, start + self.settings.batch_size)
            feed = {
                "lq": lq_np[rows],
                "w": np.ascontiguousarray(w_np[rows]),
                "quality": np.ascontiguousarray(q_np[rows]),
            }
            return torch.from_numpy(self._session.run(["image"], feed)[0])

        starts = range(0, batch, self.settings.batch_size)
        if self.settings.workers > 1 and len(starts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            # onnxruntime releases the GIL and a session may run from several threads at once
            with ThreadPoolExecutor(self.settings.workers) as pool:
                images = list(pool.map(run, starts))
        else:
            images = [run(start) for start in starts]
        return RestoreOutput(image=torch.cat(images))


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store every 4-D parameter and buffer (conv weights) channels-last, in place.

    ``nn.Module.to(memory_format=...)`` would refuse the 5-D StyleGAN2 weights.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def prepare_for_inference(
    model: nn.Module,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    channels_last: bool | None = None,
    compile: bool = False,
    cuda_graphs: bool = False,
    batch_size: int = 8,
    backend: str = "torch",
    workers: int = 1,
    cpu_kernels: bool = False,
) -> InferenceRunner | OnnxRuntimeRunner:
    """Put ``model`` in inference form (eval, no grad, on ``device``, chosen layout) and wrap it.

    The model is modified in place (like ``model.eval().to(device)``): keep a separate copy if the
    same instance must also train. ``channels_last=None`` means on (it pays on CPU and GPU).
    ``cuda_graphs`` needs ``compile`` and CUDA. ``backend="onnxruntime"`` exports the network to ONNX
    and runs it in onnxruntime on the CPU (fp32; its convolution kernels beat PyTorch's on some CPUs,
    see ``benchmarks/inference.py``); its outputs carry ``image`` only. Returns the runner, itself a
    network: ``runner(lq, w=None, quality=None) -> RestoreOutput``. ``workers`` (onnxruntime only):
    chunks of ``batch_size`` faces run this many at a time, each on 1/``workers`` of the threads (on a
    few cores, two one-thread faces at once can beat one face on two threads; same outputs).
    ``cpu_kernels`` (CPU, fp32, no compile): Winograd convolutions and fused GroupNorm+SiLU from
    ``iqpfr.kernels`` (built on first use; ``iqpfr.kernels.KernelsUnavailable`` says why when it cannot be).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 1 or (workers > 1 and backend != "onnxruntime"):
        raise ValueError(f"workers must be 1, or >= 1 with backend='onnxruntime'; got {workers} with {backend!r}")
    if backend == "onnxruntime":
        if precision not in ("auto", "fp32") or compile or cuda_graphs:
            raise ValueError("backend='onnxruntime' runs fp32 without compile/cuda_graphs")
        if resolve_device(device).type != "cpu":
            raise ValueError("backend='onnxruntime' runs on the CPU (device='cpu')")
        settings = InferenceSettings("cpu", "fp32", False, False, False, int(batch_size), backend, int(workers))
        return OnnxRuntimeRunner(model.eval().requires_grad_(False).cpu(), settings)
    if backend != "torch":
        raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {backend!r}")
    dev = resolve_device(device)
    if cuda_graphs and (dev.type != "cuda" or not compile):
        raise ValueError("cuda_graphs needs device=cuda and compile=True")
    settings = InferenceSettings(
        device=str(dev),
        # the kernels are fp32: with them, auto means fp32 even where bf16 is native
        precision=resolve_precision("fp32" if cpu_kernels and precision == "auto" else precision, dev),
        channels_last=True if (channels_last is None or cpu_kernels) else bool(channels_last),
        compile=bool(compile),
        cuda_graphs=bool(cuda_graphs),
        batch_size=int(batch_size),
        cpu_kernels=bool(cpu_kernels),
    )
    if settings.cpu_kernels and (dev.type != "cpu" or settings.precision != "fp32" or settings.compile):
        raise ValueError(
            f"cpu_kernels run fp32 eager on the CPU; got device={dev}, precision={settings.precision}, "
            f"compile={settings.compile}"
        )
    model.eval().requires_grad_(False).to(dev)
    if settings.channels_last:  # always with cpu_kernels: they read and write channels-last activations
        to_channels_last(model)
    if settings.cpu_kernels:
        from iqpfr.kernels.modules import use_cpu_kernels

        use_cpu_kernels(model)
    if settings.precision in FP32_SUBMODULES:
        for name in FP32_SUBMODULES[settings.precision]:
            sub = getattr(model, name, None)
            if isinstance(sub, nn.Module):
                keep_float32(sub)
    return InferenceRunner(model, settings)
