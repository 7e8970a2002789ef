"""Release a trained model as one self-describing weight file: ``export_weights``.

The last step of a training run (README, "Train your own"): the run's ``model_ema.safetensors``
(or anything ``load_model`` reads, or a model in memory) is written with ``save_model`` in a
smaller floating-point type (fp16 by default), read back with ``load_model``, and the restored
output of the written file is compared with the source model's. The report gives the file's size
and sha256 (what a zoo entry pins) and that largest output difference.

Command line: ``iqpfr export weights RUN/model_ema.safetensors -o my_model.safetensors``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class ExportReport:
    path: Path
    bytes: int
    sha256: str
    dtype: str
    # largest |output of the written file - output of the source| on a smooth test face ([-1, 1] units);
    # None for networks that are not face restorers (no ``w`` / ``.image``)
    max_abs_diff: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def face_size(model: nn.Module) -> int | None:
    """The face side the network restores (``img_size`` / ``out_size`` of its config), if it has one."""
    config = getattr(model, "config", None)
    for key in ("img_size", "out_size"):
        if isinstance(config, dict) and isinstance(config.get(key), int):
            return int(config[key])
    return None


@torch.no_grad()
def output_difference(reference: nn.Module, other: nn.Module, *, fidelity: float = 0.5) -> float | None:
    """Largest absolute difference of the two restorers' outputs on one smooth synthetic face-sized
    input (fidelity ``w``, default quality); None when ``reference`` is no face restorer."""
    size = face_size(reference)
    if size is None:
        return None
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=gen) * 2 - 1, size=(size, size),
                                        mode="bilinear", align_corners=False)
    w = torch.full((1,), fidelity)
    try:
        a = reference.eval()(x, w=w).image.float()
    except (TypeError, AttributeError):  # not a restorer's forward(lq, w=...) -> RestoreOutput
        return None
    b = other.eval()(x, w=w).image.float()
    return float((a - b).abs().max())


def export_weights(
    source: nn.Module | str | os.PathLike, out: str | os.PathLike, *, dtype: str = "fp16",
    overwrite: bool = False, extra_config: dict[str, Any] | None = None,
) -> ExportReport:
    """Write ``source`` (a model, or a file / folder / zoo name ``load_model`` reads) to ``out`` as a
    self-describing ``.safetensors`` in ``dtype`` (``fp16``, ``bf16`` or ``fp32``); atomic.

    Raises FileExistsError if ``out`` exists and not ``overwrite``; ValueError for an unknown dtype.
    """
    from iqpfr.weights.cache import sha256_file
    from iqpfr.weights.checkpoint import load_model, save_model

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists (pass --overwrite to replace it)")
    model = source if isinstance(source, nn.Module) else load_model(source)
    model = model.float().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, out, overwrite=overwrite, extra_config=extra_config, dtype=DTYPES[dtype])
    reloaded = load_model(out)
    return ExportReport(path=out, bytes=out.stat().st_size, sha256=sha256_file(out), dtype=dtype,
                        max_abs_diff=output_difference(model, reloaded))
