"""Scorers by name: ``create_scorer(name, **kw)`` and ``list_scorers()``.

``create_scorer`` builds a built-in scorer (``niqe``, ``piqe``, ``brisque``, ``face-iqa``, ``uiqm``,
``uciqe``) or, for ``pyiqa:<metric>`` (or any name that is not built in), one of the optional pyiqa
backend. Every scorer subclasses :class:`iqpfr.quality.base.QualityScorer`; the implementations
are imported only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from iqpfr.quality.base import QualityScorer

# built-in name -> (module, class); explicit, no folder scanning
_BUILTIN = {
    "niqe": ("iqpfr.quality.niqe", "NIQE"),
    "piqe": ("iqpfr.quality.piqe", "PIQE"),
    "brisque": ("iqpfr.quality.brisque", "BRISQUE"),
    "face-iqa": ("iqpfr.quality.learned", "FaceIQA"),
    "uiqm": ("iqpfr.quality.uiqm", "UIQM"),
    "uciqe": ("iqpfr.quality.uciqe", "UCIQE"),
}

PYIQA_PREFIX = "pyiqa:"


def list_scorers() -> list[str]:
    """Names of the built-in scorers (``pyiqa:<metric>`` names are accepted too, with the extra)."""
    return sorted(_BUILTIN)


def create_scorer(name: str, **kwargs: Any) -> QualityScorer:
    """Build a scorer by name: one of :func:`list_scorers`, or ``pyiqa:<metric>`` for the pyiqa backend.

    Keyword arguments go to the scorer's constructor (e.g. ``create_scorer("niqe", params_path=...)``,
    ``create_scorer("brisque", model_path=...)``, ``create_scorer("pyiqa:musiq", as_loss=True)``).
    """
    key = name.strip()
    if key.lower() in _BUILTIN:
        module_name, class_name = _BUILTIN[key.lower()]
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(**kwargs)
    metric = key[len(PYIQA_PREFIX):] if key.lower().startswith(PYIQA_PREFIX) else key
    if not metric:
        raise ValueError(f"empty metric name in {name!r}")
    if not key.lower().startswith(PYIQA_PREFIX):
        # unknown bare name: only pyiqa might know it, say so clearly
        from iqpfr.quality.pyiqa_backend import pyiqa_available

        if not pyiqa_available():
            raise ValueError(f"unknown quality metric {name!r}: built-in metrics are "
                             f"{', '.join(list_scorers())}; other names need the optional pyiqa "
                             f"backend (pip install 'iqpfr[iqa]'), spelled pyiqa:{metric}")
    from iqpfr.quality.pyiqa_backend import PyIQAScorer

    return PyIQAScorer(metric, **kwargs)
