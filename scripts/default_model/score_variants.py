"""Score blurred and sharpened copies of the training faces for quality-augmented targets.

    python3 scripts/default_model/score_variants.py        # .device_data -> .device_data/target_variants.csv
    python3 scripts/default_model/score_variants.py --resolution 256 --levels -1.2 0.8

With 1,090 faces the quality condition is nearly ignored (session 2: face-iqa of the outputs moved by
0.007 between targets 0.1 and 0.9): the degraded input already says most of what the target looks
like, and each score bucket holds a hundred faces. A copy of a face with changed sharpness is a target
of the same person with another, measurable quality. Training with such copies as targets
(``data.target_variants``, ``data.target_variant_prob``), conditioned on their scores and fed the LQ
input of the face itself, makes the condition decide how crisp the prediction is.

For each face of ``.device_data/ffhq`` and each level (``iqpfr.data.degradations.sharpness_variant``
at the training resolution: -0.8 = Gaussian blur of std 0.8 px, 0.8 = unsharp mask of amount 0.8 and
radius 1 px) the copy is made exactly as the training loader makes it (the face resized to the
training resolution, then changed), up-sampled bicubically to the stored size (256 px) and scored
like ``.device_data/scores.csv``: the learned face scorer and NIQE, min-max normalised with that CSV's
ranges and averaged (S). ``score`` is S's mid-rank percentile among the unchanged faces' S (level 0,
through the same resize and up-sampling), i.e. the scale of the training condition
(``score_transform: rank``). Scoring copies made at the stored size instead would be wrong: a blur
of 0.6 px at 256 px changes the score a lot, its 0.3-px counterpart at 128 px hardly changes a pixel.
Writes ``imagename, level, S, score`` atomically, never over an existing file unless ``--overwrite``;
a face that cannot be read is named and skipped.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dm_common as dm  # noqa: E402

DATA = dm.REPO / dm.DATA_DIR_NAME


def percentile(values, reference) -> list[float]:
    """Mid-rank percentile of each value among ``reference`` (sorted), clipped to (0, 1)."""
    import numpy as np

    ref = np.sort(np.asarray(reference, dtype=np.float64))
    n = len(ref)
    v = np.asarray(values, dtype=np.float64)
    mid = (np.searchsorted(ref, v, "left") + np.searchsorted(ref, v, "right")) / 2.0
    return np.clip(mid / n, 0.5 / n, 1 - 0.5 / n).tolist()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, default=DATA / "ffhq")
    ap.add_argument("--scores", type=Path, default=DATA / "scores.csv", help="`iqpfr score` CSV (its .json: ranges)")
    ap.add_argument("-o", "--out", type=Path, default=DATA / "target_variants.csv")
    ap.add_argument("--resolution", type=int, default=128, help="training resolution the levels refer to")
    ap.add_argument("--levels", type=float, nargs="+", default=[-1.2, -0.8, -0.5, 0.4, 0.8, 1.5],
                    help="< 0: blur std in px; > 0: unsharp-mask amount (radius 1 px); 0 is always scored")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = ap.parse_args(argv)

    import cv2
    import numpy as np
    import torch

    from iqpfr.data.dataset import resize_square
    from iqpfr.data.degradations import sharpness_variant
    from iqpfr.io import ImageReadError, list_images, read_rgb
    from iqpfr.quality.ensemble import QualityEnsemble, load_ranges
    from iqpfr.quality.registry import create_scorer
    from iqpfr.utils.fs import atomic_write_text

    levels = sorted(set(args.levels) | {0.0})
    for path in (args.faces, args.scores):
        if not path.exists():
            print(f"score_variants: {path}: not found (run pack_data.py first)", file=sys.stderr)
            return 2
    if args.out.exists() and not args.overwrite:
        print(f"score_variants: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    ranges = load_ranges(str(args.scores) + ".json")
    scorer = QualityEnsemble([create_scorer("face-iqa"), create_scorer("niqe")], ranges).eval()

    done: dict[tuple[str, float], float] = {}  # (name, level) -> S
    faces = list_images([args.faces])
    if args.limit:
        faces = faces[: args.limit]
    failed = 0
    for k, (path, rel) in enumerate(faces):
        try:
            stored = read_rgb(path)
        except ImageReadError as exc:
            print(f"score_variants: {exc}", file=sys.stderr)
            failed += 1
            continue
        img = resize_square(stored, args.resolution)  # what the training loader sees
        size = (stored.shape[1], stored.shape[0])
        batch = np.stack([cv2.resize(sharpness_variant(img, v), size, interpolation=cv2.INTER_CUBIC) for v in levels])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)
        with torch.no_grad():
            values = scorer(x).double().tolist()
        done.update({(rel.name, v): value for v, value in zip(levels, values)})
        if (k + 1) % 100 == 0:
            print(f"score_variants: {k + 1}/{len(faces)} faces", flush=True)
    keys = sorted(done)
    reference = [done[k] for k in keys if k[1] == 0.0]
    ranks = percentile([done[k] for k in keys], reference)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["imagename", "level", "S", "score"])
    for (name, level), q in zip(keys, ranks):
        writer.writerow([name, f"{level:g}", f"{done[(name, level)]:.6f}", f"{q:.6f}"])
    atomic_write_text(args.out, buf.getvalue())
    for level in levels:
        qs = np.asarray([q for (_, v), q in zip(keys, ranks) if v == level])
        if qs.size:
            buckets = np.bincount(np.floor(10 * qs).astype(int), minlength=10).tolist()
            print(f"score_variants: level {level:+g}: {qs.size} faces, mean score {qs.mean():.3f}, buckets {buckets}")
    print(f"score_variants: wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
