"""iqpfr: blind face restoration guided by an image-quality prior.

Importing the package is cheap: heavy modules (torch models, face detectors, scorers) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first attribute access (PEP 562)
_LAZY = {
    "create_model": "iqpfr.weights.checkpoint",
    "list_models": "iqpfr.models.factory",
    "load_model": "iqpfr.weights.checkpoint",
    "save_model": "iqpfr.weights.checkpoint",
    "FaceRestorer": "iqpfr.restorer",
    "prepare_for_inference": "iqpfr.inference",
    "export_onnx": "iqpfr.export",
    "FaceFilter": "iqpfr.face.pipeline",
    "resolve_weights": "iqpfr.weights",
    "DegradationConfig": "iqpfr.data.degradations",
    "degrade": "iqpfr.data.degradations",
    "EvalConfig": "iqpfr.eval.runner",
    "evaluate": "iqpfr.eval.runner",
    "create_scorer": "iqpfr.quality.registry",
    "list_scorers": "iqpfr.quality.registry",
    "QualityScorer": "iqpfr.quality.base",
    "TrainConfig": "iqpfr.train.config",
    "load_train_config": "iqpfr.train.config",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iqpfr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
