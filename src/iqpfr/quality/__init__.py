"""No-reference image-quality scorers (the image-quality prior of IQPFR).

``create_scorer(name, **kw)`` builds one of ``list_scorers()`` (``niqe``, ``piqe``, ``brisque``,
``face-iqa``) or a ``pyiqa:<metric>``; every scorer maps (B, 3, H, W) RGB in [0, 1] to (B,).
Submodules are imported on first use so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "QualityScorer": "iqpfr.quality.base",
    "create_scorer": "iqpfr.quality.registry",
    "list_scorers": "iqpfr.quality.registry",
    "QualityEnsemble": "iqpfr.quality.ensemble",
    "minmax_normalize": "iqpfr.quality.ensemble",
    "ensemble_average": "iqpfr.quality.ensemble",
    "hq_split_summary": "iqpfr.quality.ensemble",
    "load_ranges": "iqpfr.quality.ensemble",
    "brisque_features": "iqpfr.quality.brisque",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iqpfr.quality' has no attribute {name!r}")
