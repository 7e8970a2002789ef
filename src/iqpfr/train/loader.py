"""The data of a run: the stage's dataset and the resumable, sharded, infinite loader of micro-batches."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from iqpfr.train.config import TrainConfig
from iqpfr.train.dist import DistInfo


def build_dataset(cfg: TrainConfig):
    """The stage's FaceDataset (stage III also synthesises the small-degradation input)."""
    from iqpfr.data.dataset import FaceDataset, preset_degrader, read_target_variants

    d = cfg.data
    variants = read_target_variants(d.target_variants) if d.target_variants and cfg.stage != 1 else None
    res = d.resolution if d.scale_degradation else None
    large = preset_degrader(d.degradation, resolution=res, color_jitter=d.color_jitter, gray=d.gray)
    small = None
    if cfg.stage == 3:
        small = preset_degrader(d.small_degradation, resolution=res, color_jitter=d.color_jitter, gray=d.gray)
    return FaceDataset(
        d.folders, resolution=d.resolution, seed=cfg.seed, scores_csv=d.scores_csv,
        score_column=d.score_column, default_score=d.default_score, flip=d.flip,
        degrader=large if cfg.stage != 1 else None, small_degrader=small, limit=d.limit,
        score_transform=d.score_transform, target_variants=variants,
        target_variant_prob=d.target_variant_prob if variants else 0.0,
    )


def build_loader(dataset, cfg: TrainConfig, info: DistInfo, start_sample: int) -> DataLoader:
    """Infinite loader of micro-batches for this process, starting after ``start_sample`` samples."""
    from iqpfr.data.dataset import ResumableSampler

    sampler = ResumableSampler(len(dataset), seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                               start=start_sample)
    # a fixed generator: creating the iterator must not draw from (and shift) the global RNG
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                      pin_memory=torch.cuda.is_available(), drop_last=True,
                      generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=False)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

