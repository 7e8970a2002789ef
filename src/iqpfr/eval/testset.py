"""Synthetic test sets (``iqpfr make-testset``): ``OUT/gt/`` and ``OUT/lq/`` pairs plus parameters.

Protocols (method.md section 5, last row; IQPIR ``scripts/generate_degraded_celeba.py``):

- ``celeba-test``: each HQ face is resized to ``size`` x ``size`` (512 by default; area
  interpolation when shrinking, bicubic when enlarging) and degraded with the "large" blur, noise
  and JPEG ranges at a *fixed* down-sampling factor: half of the images (a seeded permutation of the
  sorted file list; the first ceil(N/2)) at x8, the other half at x16. The factor of every image is
  in ``params.csv``.
- ``celeba-test-x8`` / ``celeba-test-x16``: every image at that single factor (one set per factor,
  as the papers report x8 and x16 separately).
- ``large`` / ``small``: the training ranges, for other experiments.

The random draws of an image depend only on (seed, its relative path) and its factor, so a re-run
reproduces the same pairs and only writes the missing ones.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

PROTOCOLS = ("celeba-test", "celeba-test-x8", "celeba-test-x16", "large", "small")


@dataclass
class TestsetReport:
    written: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def preset_for(protocol: str, index_in_permutation: int, n_files: int) -> str:
    """Degradation preset of one image under ``protocol``."""
    if protocol == "celeba-test":
        return "celeba-x8" if index_in_permutation < (n_files + 1) // 2 else "celeba-x16"
    if protocol == "celeba-test-x8":
        return "celeba-x8"
    if protocol == "celeba-test-x16":
        return "celeba-x16"
    if protocol in ("large", "small"):
        return protocol
    raise ValueError(f"unknown test-set protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if img.shape[0] == size and img.shape[1] == size:
        return img
    shrink = img.shape[0] > size or img.shape[1] > size
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def make_testset(hq_inputs: list[str | Path], out_dir: str | Path, *, protocol: str = "celeba-test", seed: int = 0,
                 size: int = 512, recursive: bool = False, overwrite: bool = False, progress: bool | None = None,
                 log: Callable[[str], None] | None = None) -> TestsetReport:
    """Write ``out_dir/gt``, ``out_dir/lq``, ``params.csv``/``params.json`` and ``protocol.json``."""
    from tqdm import tqdm

    from iqpfr.data.degradations import DegradationConfig, degrade, file_seed_index, sample_rng
    from iqpfr.data.params_table import merge_params_tables
    from iqpfr.io import ImageReadError, list_images, read_rgb, write_rgb
    from iqpfr.utils.fs import atomic_write_text

    log = log or (lambda msg: print(msg, file=sys.stderr))
    preset_for(protocol, 0, 1)  # validates the name
    out_dir = Path(out_dir)
    files = list_images(hq_inputs, recursive=recursive)
    if not files:
        raise ValueError("no HQ images found")
    input_paths = {p.resolve() for p, _ in files}
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x7E57])).permutation(len(files))
    rank = {int(file_index): pos for pos, file_index in enumerate(order)}

    report = TestsetReport()
    rows = []
    for i, (path, rel) in enumerate(tqdm(files, desc="make-testset", unit="img", file=sys.stderr,
                                         disable=(not progress) if progress is not None else None)):
        name = rel.with_suffix(".png")
        gt_target, lq_target = out_dir / "gt" / name, out_dir / "lq" / name
        if gt_target.resolve() in input_paths or lq_target.resolve() in input_paths:
            report.failures.append(f"{path}: output would overwrite an input")
            log(f"iqpfr make-testset: {report.failures[-1]}")
            continue
        if gt_target.exists() and lq_target.exists() and not overwrite:
            report.skipped += 1
            continue
        preset = preset_for(protocol, rank[i], len(files))
        try:
            gt = resize_square(read_rgb(path), size)
            lq, params = degrade(gt, DegradationConfig.preset(preset),
                                 sample_rng(seed, 0, file_seed_index(rel.as_posix())))
            write_rgb(gt_target, gt, overwrite=True)
            write_rgb(lq_target, lq, overwrite=True)
        except (ImageReadError, ValueError, OSError) as exc:
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            report.failures.append(msg)
            log(f"iqpfr make-testset: {msg}")
            continue
        report.written += 1
        rows.append({"file": name.as_posix(), "source": str(path), "preset": preset, "seed": seed,
                     **params.to_dict()})
    if rows:
        merge_params_tables(out_dir, rows)
    meta = {"protocol": protocol, "seed": seed, "size": size, "n_inputs": len(files),
            "degradation_presets": {p: asdict(DegradationConfig.preset(p)) for p in
                                    sorted({preset_for(protocol, k, len(files)) for k in range(len(files))})},
            "description": __doc__}
    atomic_write_text(out_dir / "protocol.json", json.dumps(meta, indent=1) + "\n")
    return report
