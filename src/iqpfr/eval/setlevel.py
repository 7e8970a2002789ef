"""Set-level metrics of ``iqpfr eval``: FID and KID of the predictions against a reference set.

The reference is ``--fid-ref``: a folder of images, or an ``.npz`` of statistics written by
:func:`iqpfr.eval.fid.save_statistics` (``mu``, ``sigma``, ``features``) or by pytorch-fid (``mu``,
``sigma`` only; enough for FID, not for KID). Without ``--fid-ref`` the GT folder is the reference.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from iqpfr.io import ImageReadError, list_images, read_rgb


def folder_features(model, paths: list[Path], batch_size: int, log: Callable[[str], None],
                    desc: str = "fid features", progress: bool | None = None) -> np.ndarray:
    """(N, 2048) Inception features of the readable images in ``paths`` (unreadable ones reported)."""
    import torch
    from tqdm import tqdm

    from iqpfr.eval.fid import FEATURE_DIM, inception_features

    feats = []
    bar = tqdm(total=len(paths), desc=desc, unit="img", file=sys.stderr,
               disable=(not progress) if progress is not None else None)
    for start in range(0, len(paths), max(1, batch_size)):
        images = []
        for path in paths[start : start + max(1, batch_size)]:
            try:
                images.append(read_rgb(path))
            except ImageReadError as exc:
                log(f"iqpfr eval: {exc}")
        by_shape: dict[tuple, list[np.ndarray]] = {}
        for img in images:
            by_shape.setdefault(img.shape, []).append(img)
        for group in by_shape.values():
            x = torch.from_numpy(np.stack(group)).permute(0, 3, 1, 2).float().div(255.0)
            feats.append(inception_features(model, x))
        bar.update(min(batch_size, len(paths) - start))
    bar.close()
    return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM))


def set_level_metrics(cfg, metrics: list[str], pred_paths: list[Path], computer,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """{"fid": ..., "kid": ..., "kid_std": ..., "fid_n_pred": ..., "fid_n_ref": ..., "fid_ref": ...}."""
    from iqpfr.eval.fid import (
        feature_statistics,
        frechet_distance,
        kernel_inception_distance,
        load_fid_inception,
        load_reference,
        save_statistics,
    )

    model = computer.model("inception", lambda: load_fid_inception(cfg.fid_weights, offline=cfg.offline,
                                                                          device=computer.device))
    pred_feats = folder_features(model, pred_paths, cfg.batch_size, log, "fid pred", cfg.progress)
    ref = Path(cfg.fid_ref) if cfg.fid_ref is not None else cfg.gt_dir
    if ref.suffix == ".npz":
        mu_ref, sigma_ref, ref_feats = load_reference(ref)
    else:
        ref_paths = [p for p, _ in list_images([ref], recursive=cfg.recursive)]
        ref_feats = folder_features(model, ref_paths, cfg.batch_size, log, "fid ref", cfg.progress)
        mu_ref, sigma_ref = feature_statistics(ref_feats)
        if cfg.fid_save_ref is not None:
            save_statistics(cfg.fid_save_ref, ref_feats)
            log(f"iqpfr eval: reference statistics of {ref} saved to {cfg.fid_save_ref}")
    out: dict[str, Any] = {"fid_ref": str(ref), "fid_n_pred": int(len(pred_feats)),
                           "fid_n_ref": int(len(ref_feats)) if ref_feats is not None else None}
    if "fid" in metrics:
        out["fid"] = frechet_distance(*feature_statistics(pred_feats), mu_ref, sigma_ref)
    if "kid" in metrics:
        if ref_feats is None:
            raise ValueError(f"{ref}: KID needs reference features; this statistics file has only mu/sigma")
        out["kid"], out["kid_std"] = kernel_inception_distance(pred_feats, ref_feats)
    return out
