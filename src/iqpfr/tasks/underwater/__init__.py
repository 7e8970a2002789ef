"""Underwater image enhancement with a quality prior (IQPFR "beyond faces").

``UnderwaterEnhancer.from_pretrained().enhance(image, quality=...)``; the network is
:class:`iqpfr.tasks.underwater.model.UnderwaterEnhanceNet`. Submodules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "UnderwaterEnhancer": "iqpfr.tasks.underwater.enhancer",
    "UnderwaterEnhanceNet": "iqpfr.tasks.underwater.model",
    "enhance_image": "iqpfr.tasks.underwater.model",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iqpfr.tasks.underwater' has no attribute {name!r}")
