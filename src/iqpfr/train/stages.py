"""The table of training stages: which ``Stage`` class trains ``cfg.stage`` (and ``stage2.targets``).

Every stage subclasses ``iqpfr.train.base.Stage`` and imports only the shared pieces
(``base``, ``networks``, ``losses``, ``discriminator``, ``targets``, ``perceptual``); nothing but
the loop imports this table.
"""

from __future__ import annotations

from typing import Any

from iqpfr.train.base import Stage
from iqpfr.train.stage1 import Stage1
from iqpfr.train.stage2 import Stage2
from iqpfr.train.stage2_image import ImageTargetStage
from iqpfr.train.stage3 import Stage3

# (stage, stage2.targets) -> class; stages I and III have one kind
STAGES: dict[tuple[int, str | None], type[Stage]] = {
    (1, None): Stage1,
    (2, "codes"): Stage2,
    (2, "image"): ImageTargetStage,
    (3, None): Stage3,
}


def stage_class(cfg) -> type[Stage]:
    """The ``Stage`` subclass that trains ``cfg`` (a validated ``TrainConfig``)."""
    key = (int(cfg.stage), cfg.stage2.targets if int(cfg.stage) == 2 else None)
    if key not in STAGES:
        raise ValueError(f"no training stage for stage={cfg.stage}"
                         + (f", stage2.targets={cfg.stage2.targets!r}" if key[1] else ""))
    return STAGES[key]


def build_stage(ctx, dataset, **overrides: Any) -> Stage:
    """The Stage object for ``ctx.cfg`` (``overrides`` go to its constructor, e.g. ``scorer=``)."""
    return stage_class(ctx.cfg)(ctx, dataset, **overrides)
