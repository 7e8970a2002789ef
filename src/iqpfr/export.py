"""ONNX export of the restoration networks, with an onnxruntime check against PyTorch.

The exported graph has the same three inputs for every network, so one deployment serves all:

    lq       float32 (B, 3, S, S) in [-1, 1]
    w        float32 (B,)  fidelity weight in [0, 1] (ignored by GFPGAN, as in PyTorch)
    quality  float32 (B,)  target quality in [0, 1] (used by quality-conditioned networks; 0.9 = default)
    -> image float32 (B, 3, S, S), raw (not clamped)

B is a dynamic axis unless ``dynamic_batch=False``. Inputs a network does not use are still declared
(PyTorch's exporter drops them), so callers can always feed all three.

``io_names=("input", "weight")`` writes the layout facefusion / ReActor-style runners expect instead:

    input    float32 (B, 3, S', S') in [-1, 1] RGB
    weight   float64 (1,) or (B,) fidelity (optional: ``io_names=("input",)`` bakes ``fidelity`` in)
    -> output float32 (B, 3, S', S'), raw

with the quality target baked in (``quality``, default 0.9) and, with ``io_size`` S' (a multiple of
the network's side S, e.g. 512 for runners that only feed 512-px crops), an area down-sampling to
S before the network and a bicubic up-sampling after it inside the graph.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from iqpfr.utils.fs import atomic_path

INPUT_NAMES = ("lq", "w", "quality")
OUTPUT_NAMES = ("image",)
DEFAULT_OPSET = 17
CHECK_TOLERANCE = 1e-3


class OnnxGraph(nn.Module):
    """``(lq, w, quality) -> image`` view of a restoration network, all arguments tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq: torch.Tensor, w: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return self.model(lq, w=w, quality=quality).image


class NamedIOGraph(nn.Module):
    """``(input[, weight]) -> output`` view for host runners (see the module docstring)."""

    def __init__(self, model: nn.Module, *, fidelity: float = 0.5, quality: float = 0.9, io_size: int | None = None,
                 with_weight: bool = True) -> None:
        super().__init__()
        self.model = model
        self.fidelity, self.quality = float(fidelity), float(quality)
        self.size = model_image_size(model)
        self.io_size = io_size or self.size
        if self.io_size % self.size:
            raise ValueError(f"io_size {self.io_size} must be a multiple of the network's side {self.size}")
        self.with_weight = with_weight

    def forward(self, input: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:  # noqa: A002
        batch = input.shape[0]
        x = input
        factor = self.io_size // self.size
        if factor > 1:
            x = torch.nn.functional.avg_pool2d(x, factor)
        if weight is None:
            w = torch.full((batch,), self.fidelity, dtype=x.dtype, device=x.device)
        else:
            w = weight.to(x.dtype).reshape(-1).expand(batch)
        q = torch.full((batch,), self.quality, dtype=x.dtype, device=x.device)
        out = self.model(x, w=w, quality=q).image
        if factor > 1:
            out = torch.nn.functional.interpolate(out, scale_factor=float(factor), mode="bicubic", align_corners=False)
        return out


def model_image_size(model: nn.Module) -> int:
    """Face side S the network expects, from its ``config`` (``img_size`` or ``out_size``)."""
    config = getattr(model, "config", None) or {}
    for key in ("img_size", "out_size"):
        if isinstance(config.get(key), int):
            return int(config[key])
    raise ValueError(f"{type(model).__name__}: cannot tell the input size (no img_size/out_size in config)")


def example_inputs(
    model: nn.Module, batch: int, seed: int = 0, w: float = 0.5, quality: float = 0.9
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic (lq, w, quality) for tracing and checking: lq uniform in [-1, 1]."""
    size = model_image_size(model)
    gen = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    return lq, torch.full((batch,), w), torch.full((batch,), quality)


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and, with ``check``, how onnxruntime compared with PyTorch."""

    path: str
    opset: int
    image_size: int
    dynamic_batch: bool
    export_seconds: float
    size_bytes: int
    checked_batches: tuple[int, ...] = ()
    max_abs_diff: float | None = None
    tolerance: float = CHECK_TOLERANCE

    @property
    def passed(self) -> bool | None:
        return None if self.max_abs_diff is None else self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _declare_unused_inputs(path: Path, batch_dim: str | int) -> None:
    """Add the graph inputs among ``INPUT_NAMES`` that the exporter pruned (unused by the network)."""
    import onnx
    from onnx import TensorProto, helper

    graph_model = onnx.load(os.fspath(path))
    present = {i.name for i in graph_model.graph.input}
    missing = [name for name in INPUT_NAMES[1:] if name not in present]
    if not missing:
        return
    for name in missing:
        graph_model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch_dim]))
    onnx.save(graph_model, os.fspath(path))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    batch: int = 1,
    dynamic_batch: bool = True,
    check: bool = False,
    overwrite: bool = False,
    io_names: tuple[str, ...] | None = None,
    io_size: int | None = None,
    fidelity: float = 0.5,
    quality: float = 0.9,
) -> ExportReport:
    """Export ``model`` (any iqpfr restoration network) to ONNX at ``path``, atomically.

    batch: batch size traced (and the graph's fixed batch with ``dynamic_batch=False``).
    check: run the file in onnxruntime (CPU) on fresh inputs, at ``batch`` and, when the batch is
    dynamic, at ``batch + 1``, and record the max |onnx - torch| of ``image`` in the report.
    An existing ``path`` is refused unless ``overwrite``. ``io_names`` (("input", "weight") or
    ("input",)), ``io_size``, ``fidelity`` and ``quality``: the host-runner layout of the module
    docstring (``fidelity`` is used only without a weight input).
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: exists (refusing to overwrite; pass overwrite=True / --overwrite)")
    model = model.eval()
    if io_names is not None or io_size is not None:
        return _export_named(model, target, io_names or ("input", "weight"), io_size=io_size, fidelity=fidelity,
                             quality=quality, opset=opset, batch=batch, dynamic_batch=dynamic_batch, check=check,
                             overwrite=overwrite)
    graph = OnnxGraph(model).eval()
    inputs = example_inputs(model, batch)
    batch_dim: str | int = "batch" if dynamic_batch else batch
    dynamic_axes = {name: {0: "batch"} for name in (*INPUT_NAMES, *OUTPUT_NAMES)} if dynamic_batch else None
    start = time.perf_counter()
    with atomic_path(target, overwrite=overwrite) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        # TorchScript-based exporter: the torch.export-based one needs the extra `onnxscript` package
        torch.onnx.export(
            graph,
            inputs,
            os.fspath(tmp),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
        )
        _declare_unused_inputs(tmp, batch_dim)
    report = ExportReport(
        path=os.fspath(target),
        opset=opset,
        image_size=model_image_size(model),
        dynamic_batch=dynamic_batch,
        export_seconds=time.perf_counter() - start,
        size_bytes=target.stat().st_size,
    )
    if check:
        batches = (batch, batch + 1) if dynamic_batch else (batch,)
        report.max_abs_diff = check_onnx(model, target, batches)
        report.checked_batches = batches
    return report


def check_onnx(model: nn.Module, path: str | os.PathLike, batches: tuple[int, ...] = (1,)) -> float:
    """Max |onnxruntime - PyTorch| of ``image`` over fresh inputs at each batch size (per-sample w)."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, b in enumerate(batches):
        lq, _, _ = example_inputs(model, b, seed=100 + i)
        w = torch.linspace(0.0, 1.0, b) if b > 1 else torch.tensor([0.7])
        quality = torch.linspace(0.95, 0.3, b) if b > 1 else torch.tensor([0.9])
        with torch.no_grad():
            expected = model(lq, w=w, quality=quality).image.numpy()
        (actual,) = session.run(
            list(OUTPUT_NAMES), {"lq": lq.numpy(), "w": w.numpy(), "quality": quality.numpy()}
        )
        worst = max(worst, float(np.abs(actual - expected).max()))
    return worst


def _export_named(model: nn.Module, target: Path, io_names: tuple[str, ...], *, io_size: int | None, fidelity: float,
                  quality: float, opset: int, batch: int, dynamic_batch: bool, check: bool,
                  overwrite: bool) -> ExportReport:
    if len(io_names) not in (1, 2) or len(set(io_names)) != len(io_names) or not all(io_names):
        raise ValueError(f"io_names must be 'IMAGE' or 'IMAGE,WEIGHT' (e.g. input,weight), got {','.join(io_names)}")
    graph = NamedIOGraph(model, fidelity=fidelity, quality=quality, io_size=io_size, with_weight=len(io_names) == 2).eval()
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, graph.io_size, graph.io_size, generator=gen) * 2 - 1
    inputs: tuple = (image, torch.tensor([fidelity], dtype=torch.float64)) if graph.with_weight else (image,)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {io_names[0]: {0: "batch"}, "output": {0: "batch"}}
        if graph.with_weight:
            dynamic_axes[io_names[1]] = {0: "weights"}  # (1,) for every face, or one per face
    start = time.perf_counter()
    with atomic_path(target, overwrite=overwrite) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, inputs, os.fspath(tmp), dynamo=False, input_names=list(io_names),
                          output_names=["output"], dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True)
    report = ExportReport(path=os.fspath(target), opset=opset, image_size=graph.io_size, dynamic_batch=dynamic_batch,
                          export_seconds=time.perf_counter() - start, size_bytes=target.stat().st_size)
    if check:
        report.max_abs_diff = check_named_onnx(graph, target, io_names, batch)
        report.checked_batches = (batch,)
    return report


def check_named_onnx(graph: NamedIOGraph, path: str | os.PathLike, io_names: tuple[str, ...], batch: int = 1) -> float:
    """Max |onnxruntime - PyTorch| of a host-layout file, fed as facefusion feeds it (weight float64 (1,))."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(100)
    worst = 0.0
    for w in (0.0, 0.7, 1.0):
        image = torch.rand(batch, 3, graph.io_size, graph.io_size, generator=gen) * 2 - 1
        weight = torch.tensor([w], dtype=torch.float64)
        feeds = {io_names[0]: image.numpy()}
        if graph.with_weight:
            feeds[io_names[1]] = weight.numpy()
        with torch.no_grad():
            expected = graph(image, weight if graph.with_weight else None).numpy()
        (actual,) = session.run(["output"], feeds)
        worst = max(worst, float(np.abs(actual - expected).max()))
    return worst
