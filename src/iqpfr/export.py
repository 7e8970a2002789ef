"""ONNX export of the restoration networks, with an onnxruntime check against PyTorch.

The exported graph has the same three inputs for every network, so one deployment serves all:

    lq       float32 (B, 3, S, S) in [-1, 1]
    w        float32 (B,)  fidelity weight in [0, 1] (ignored by GFPGAN, as in PyTorch)
    quality  float32 (B,)  target quality in [0, 1] (used by quality-conditioned networks; 0.9 = default)
    -> image float32 (B, 3, S, S), raw (not clamped)

B is a dynamic axis unless ``dynamic_batch=False``. Inputs a network does not use are still declared
(PyTorch's exporter drops them), so callers can always feed all three.
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
) -> ExportReport:
    """Export ``model`` (any iqpfr restoration network) to ONNX at ``path``, atomically.

    batch: batch size traced (and the graph's fixed batch with ``dynamic_batch=False``).
    check: run the file in onnxruntime (CPU) on fresh inputs, at ``batch`` and, when the batch is
    dynamic, at ``batch + 1``, and record the max |onnx - torch| of ``image`` in the report.
    An existing ``path`` is refused unless ``overwrite``.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: exists (refusing to overwrite; pass overwrite=True / --overwrite)")
    model = model.eval()
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
