"""Optional backend: any `pyiqa <https://github.com/chaofengc/IQA-PyTorch>`_ metric as a QualityScorer.

Install with ``pip install 'iqpfr[iqa]'``. ``create_scorer("pyiqa:musiq")`` (or ``topiq_nr-face``,
``clipiqa``, ``maniqa``, ``qalign``, ...) wraps ``pyiqa.create_metric``. Images are passed in [0, 1],
as pyiqa expects (the released IQPIR code feeds [-1, 1] on one path; that is a bug). With
``as_loss=True`` the metric keeps its graph so it can serve as a training loss (where pyiqa allows).
pyiqa downloads pretrained weights on first use; when that is impossible the error names the metric
and says where the weights are expected. The pyiqa version is recorded in ``extra_info()``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import torch

from iqpfr.quality.base import QualityScorer


class PyIQAUnavailableError(ImportError):
    """pyiqa is not installed, or a metric (or its weights) could not be loaded."""


def pyiqa_available() -> bool:
    """True when the ``pyiqa`` package can be imported (without importing it)."""
    return importlib.util.find_spec("pyiqa") is not None


def import_pyiqa() -> Any:
    """Import pyiqa or raise :class:`PyIQAUnavailableError` saying how to get it."""
    try:
        return importlib.import_module("pyiqa")
    except ImportError as exc:
        raise PyIQAUnavailableError(
            f"the pyiqa backend needs the 'pyiqa' package, which is not installed ({exc}); "
            "install it with: pip install 'iqpfr[iqa]'") from None


class PyIQAScorer(QualityScorer):
    """A pyiqa metric behind the QualityScorer interface.

    Args:
        metric: pyiqa metric name, e.g. ``"topiq_nr-face"``, ``"musiq"``, ``"clipiqa"``.
        as_loss: build the metric for use as a loss (gradients to the images).
        device: where the metric runs (default: CPU; ``.to()`` moves it later).
        **kwargs: passed to ``pyiqa.create_metric``.
    """

    differentiable = False

    def __init__(self, metric: str, as_loss: bool = False, device: str | torch.device | None = None, **kwargs: Any) -> None:
        super().__init__()
        pyiqa = import_pyiqa()
        self.metric_name = metric
        self.pyiqa_version = str(getattr(pyiqa, "__version__", "unknown"))
        known = _list_models(pyiqa)
        if known is not None and metric not in known:
            raise ValueError(f"pyiqa {self.pyiqa_version} has no metric {metric!r} "
                             f"(see pyiqa.list_models(); e.g. {', '.join(sorted(known)[:6])}, ...)")
        try:
            self.metric = pyiqa.create_metric(metric, as_loss=as_loss, device=torch.device(device or "cpu"), **kwargs)
        except Exception as exc:  # network errors, missing files, bad kwargs: all end here
            raise PyIQAUnavailableError(
                f"pyiqa {self.pyiqa_version} could not load metric {metric!r} ({type(exc).__name__}: {exc}); "
                "if its pretrained weights are missing, download them once with network access (pyiqa caches "
                "them under ~/.cache/torch/hub/pyiqa, HF_ENDPOINT selects a mirror) or copy them there") from exc
        self.name = f"pyiqa:{metric}"
        self.higher_better = not bool(getattr(self.metric, "lower_better", False))
        self.differentiable = bool(as_loss)
        self.range = _parse_range(getattr(self.metric, "score_range", None))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.differentiable:
            return self.metric(images).reshape(-1)
        with torch.no_grad():
            return self.metric(images).reshape(-1).detach()

    def extra_info(self) -> dict:
        return {"backend": "pyiqa", "pyiqa_version": self.pyiqa_version, "metric": self.metric_name}


def _list_models(pyiqa: Any) -> set[str] | None:
    try:
        return set(pyiqa.list_models())
    except Exception:  # older or stub pyiqa without list_models: let create_metric decide
        return None


def _parse_range(text: Any) -> tuple[float, float]:
    """pyiqa's ``score_range`` strings look like '~0, ~100' or '0, 1'; fall back to (0, 1)."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        return float(text[0]), float(text[1])
    try:
        lo, hi = (float(p.strip().lstrip("~")) for p in str(text).split(","))
        return lo, hi
    except (ValueError, TypeError):
        return (0.0, 1.0)
