"""Training data: aligned HQ faces from folders, joined with quality scores, degraded on the fly.

Every random choice for a sample (flip, degradation parameters, noise) is drawn from a generator
seeded with ``(seed, epoch, index)``, so a sample does not depend on worker count, worker order or
the process's RNG state. ``ResumableSampler`` makes the data order a pure function of
``(seed, epoch)`` and the number of samples already consumed, so a resumed run sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_NAME_COLUMNS = ("imagename", "image", "name", "filename", "file", "path")

# (uint8 RGB HxWx3, generator) -> uint8 RGB HxWx3 of the same size
Degrader = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def list_face_images(folders: Sequence[str | Path], limit: int = 0) -> list[Path]:
    """Image files of each folder (sorted by name, folders in the given order)."""
    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: image folder not found")
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        paths.extend(found)
    return paths[:limit] if limit > 0 else paths


def read_scores_csv(path: str | Path, column: str | None = None) -> dict[str, float]:
    """Map image file name (and stem) -> score from a CSV with a name column and a score column.

    The name column is the first of ``imagename, image, name, filename, file, path`` present (else
    the first column); the score column is ``column``, else ``score``. Rows whose score is not a
    number (e.g. a trailing ``avg`` summary row) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scores CSV not found")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        lower = {f.strip().lower(): f for f in fields}
        name_col = next((lower[c] for c in _NAME_COLUMNS if c in lower), fields[0] if fields else None)
        score_col = column if column is not None else lower.get("score")
        if name_col is None or score_col is None or score_col not in fields:
            raise ValueError(f"{path}: needs a name column and a score column "
                             f"({column or 'score'!r}); found {fields}")
        scores: dict[str, float] = {}
        for row in reader:
            try:
                value = float(row[score_col])
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                continue
            name = Path(str(row[name_col]).strip()).name
            scores[name] = value
            scores.setdefault(Path(name).stem, value)
    if not scores:
        raise ValueError(f"{path}: no numeric scores in column {score_col!r}")
    return scores


def read_target_variants(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Map face file name (and stem) -> [(level, score), ...] from a CSV ``imagename, level, score``.

    Written by ``scripts/default_model/score_variants.py``: ``level`` is the sharpness change of a
    copy of the face (:func:`iqpfr.data.degradations.sharpness_variant` at the training resolution:
    < 0 blurred, > 0 sharpened) and ``score`` its quality on the training condition's scale. Rows
    with level 0 (the face itself) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: target variants CSV not found")
    table: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"imagename", "level", "score"} <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs columns imagename, level, score; found {reader.fieldnames}")
        for row in reader:
            try:
                level, score = float(row["level"]), float(row["score"])
            except ValueError:
                continue
            if level != 0 and math.isfinite(level) and math.isfinite(score):
                table.setdefault(row["imagename"], []).append((level, score))
    for name in list(table):
        table.setdefault(Path(name).stem, table[name])
    if not table:
        raise ValueError(f"{path}: no usable rows")
    return table


def load_rgb(path: Path, resolution: int) -> np.ndarray:
    """uint8 RGB (R, R, 3): the file resized to ``resolution`` (area when shrinking, cubic when growing).

    Raises ``ImageReadError`` naming the file when it cannot be read.
    """
    from iqpfr.io import read_rgb

    return resize_square(read_rgb(path), resolution)


def resize_square(img: np.ndarray, resolution: int) -> np.ndarray:
    """An (H, W, 3) image resized to (R, R, 3) as the training loader does (area when shrinking, cubic when growing)."""
    if img.shape[0] != resolution or img.shape[1] != resolution:
        shrink = img.shape[0] > resolution or img.shape[1] > resolution
        img = cv2.resize(img, (resolution, resolution),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return img


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> 3xHxW float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 127.5 - 1.0


def preset_degrader(preset: str, *, resolution: int | None = None, color_jitter: bool = False,
                    gray: bool = False) -> Degrader:
    """A Degrader from a preset of :mod:`iqpfr.data.degradations`; colour options as in its "color" preset.

    The presets are defined for 512x512 faces. With ``resolution`` (e.g. 256 for a smaller model)
    the blur sigmas, kernel size and down-sampling factors are scaled by ``resolution / 512``, so
    the LQ face keeps the same information relative to the face as at 512 (noise and JPEG stay).
    """
    from iqpfr.data.degradations import PRESETS, DegradationConfig

    base = PRESETS[preset] if preset in PRESETS else DegradationConfig.preset(preset)
    overrides: dict = {}
    if color_jitter:
        color = PRESETS["color"]
        overrides.update(color_jitter_prob=color.color_jitter_prob, color_jitter_shift=color.color_jitter_shift,
                         photometric_jitter_prob=color.photometric_jitter_prob)
    if gray:
        overrides["gray_prob"] = PRESETS["color"].gray_prob
    if resolution is not None and resolution != 512:
        f = resolution / 512.0
        overrides["blur_sigma"] = (base.blur_sigma[0] * f, base.blur_sigma[1] * f)
        overrides["downsample"] = (max(1.0, base.downsample[0] * f), max(1.0, base.downsample[1] * f))
        overrides["kernel_size"] = max(7, int(round(base.kernel_size * f)) // 2 * 2 + 1)
    return _PresetDegrader(DegradationConfig.preset(preset, **overrides))


class _PresetDegrader:
    """Picklable (for data-loader workers) wrapper of ``degradations.degrade``."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from iqpfr.data.degradations import degrade

        return degrade(img, self.cfg, rng)[0]


def rank_scores(values: np.ndarray) -> np.ndarray:
    """Map scores to their mid-rank percentile in (0, 1): ties share a rank, order is kept.

    Min-max normalisation over a small set leaves most faces in a few middle buckets, so the top
    bucket that inference asks for (q = 0.9) would never be trained; ranks fill every bucket equally
    and make the HQ+ threshold a fixed share of the set (0.7 -> the best 30%).
    """
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    # average the ranks of tied values so equal scores stay equal
    _, inverse = np.unique(values, return_inverse=True)
    mean_rank = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
    return (mean_rank[inverse] + 0.5) / max(len(values), 1)


class FaceDataset(Dataset):
    """Aligned faces with scores; items are indexed by ``(epoch, index)`` (see ResumableSampler).

    Each item is a dict: ``gt`` (3xRxR in [-1, 1]), ``lq`` (degraded with ``degrader``),
    ``lq_small`` (only with ``small_degrader``), ``score`` (float32), ``index`` (int),
    ``flipped`` (bool), ``name`` (file name) and ``target_level`` (float32, 0 for the face itself).

    Quality-augmented targets (``target_variants`` from :func:`read_target_variants`, our addition
    for small training sets): with probability ``target_variant_prob`` the target ``gt`` is a blurred
    or sharpened copy of the face and ``score`` that copy's score, while ``lq`` and ``lq_small`` are
    still degraded from the face itself. The condition then decides how crisp the prediction is,
    which a thousand faces alone do not teach.
    """

    def __init__(self, folders: Sequence[str | Path], *, resolution: int, seed: int,
                 scores_csv: str | Path | None = None, score_column: str | None = None,
                 default_score: float | None = None, flip: bool = True,
                 degrader: Degrader | None = None, small_degrader: Degrader | None = None,
                 limit: int = 0, score_transform: str = "none",
                 target_variants: dict[str, list[tuple[float, float]]] | None = None,
                 target_variant_prob: float = 0.0) -> None:
        if not 0.0 <= target_variant_prob <= 1.0:
            raise ValueError(f"target_variant_prob must be in [0, 1], got {target_variant_prob}")
        if target_variant_prob > 0 and not target_variants:
            raise ValueError("target_variant_prob > 0 needs target_variants")
        self.paths = list_face_images(folders, limit)
        self.target_variants = target_variants or {}
        self.target_variant_prob = float(target_variant_prob)
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.flip = flip
        self.degrader = degrader
        self.small_degrader = small_degrader
        table = read_scores_csv(scores_csv, score_column) if scores_csv is not None else {}
        scores = []
        missing = []
        for p in self.paths:
            s = table.get(p.name, table.get(p.stem, default_score))
            if s is None:
                missing.append(p.name)
            scores.append(s)
        if missing:
            raise ValueError(f"{scores_csv}: no score for {len(missing)} of {len(self.paths)} faces "
                             f"(e.g. {missing[:3]}); run `iqpfr score` on the folder or set data.default_score")
        values = np.asarray(scores, dtype=np.float64)
        if score_transform == "rank":
            values = rank_scores(values)
        elif score_transform != "none":
            raise ValueError(f"score_transform must be 'none' or 'rank', got {score_transform!r}")
        # 1.0 would index past the 10-class embedding (method.md §13): keep scores in [0, 1)
        self.scores = np.clip(values.astype(np.float32), 0.0, np.nextafter(np.float32(1), 0))

    def __len__(self) -> int:
        return len(self.paths)

    def sample_rng(self, epoch: int, index: int) -> np.random.Generator:
        from iqpfr.data.degradations import sample_rng

        return sample_rng(self.seed, epoch, index)

    def _load(self, index: int) -> tuple[np.ndarray, int]:
        # a bad file must not kill a long run: warn (naming it) and use the next face instead
        for offset in range(len(self.paths)):
            i = (index + offset) % len(self.paths)
            try:
                return load_rgb(self.paths[i], self.resolution), i
            except ValueError as exc:  # ImageReadError (a ValueError) and bad sizes
                warnings.warn(f"{exc}; using the next face instead", stacklevel=2)
        raise RuntimeError("no readable image in the dataset")

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = self.sample_rng(epoch, index)
        img, index = self._load(int(index))
        flipped = bool(self.flip and rng.random() < 0.5)
        if flipped:
            img = np.ascontiguousarray(img[:, ::-1])
        item = {"gt": to_tensor(img), "score": torch.tensor(self.scores[index]),
                "index": index, "flipped": flipped, "name": self.paths[index].name,
                "target_level": torch.tensor(0.0)}
        # independent streams so adding the small path or the variants does not change the large one
        lq_rng, small_rng, variant_rng = rng.spawn(3)
        item["lq"] = to_tensor(self.degrader(img, lq_rng)) if self.degrader else item["gt"].clone()
        if self.small_degrader is not None:
            item["lq_small"] = to_tensor(self.small_degrader(img, small_rng))
        if self.target_variant_prob > 0 and variant_rng.random() < self.target_variant_prob:
            name = self.paths[index]
            choices = self.target_variants.get(name.name, self.target_variants.get(name.stem))
            if choices:
                from iqpfr.data.degradations import sharpness_variant

                level, score = choices[int(variant_rng.integers(len(choices)))]
                item["gt"] = to_tensor(sharpness_variant(img, level))
                item["score"] = torch.tensor(np.clip(np.float32(score), 0.0, np.nextafter(np.float32(1), 0)))
                item["target_level"] = torch.tensor(float(level))
        return item


class ResumableSampler(Sampler):
    """Infinite stream of ``(epoch, index)`` keys for one process of a (possibly distributed) run.

    Epoch e is ``randperm(n)`` seeded with ``seed + e``; process r takes every world_size-th entry,
    starting at r (the tail that does not divide evenly is dropped). ``start`` skips the samples
    this process already consumed, which is all a resumed run needs to continue the same order.
    """

    def __init__(self, num_items: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0, shuffle: bool = True) -> None:
        self.num_items = num_items
        self.per_rank = num_items // world_size
        if self.per_rank < 1:
            raise ValueError(f"{num_items} faces cannot be split over {world_size} processes")
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start = start
        self.shuffle = shuffle

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        return order[self.rank::self.world_size][:self.per_rank]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            for i in self.epoch_indices(epoch)[offset:]:
                yield epoch, i
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # infinite; DataLoader only needs this for len(loader)
        return 2**62
