"""Pack the default model's training data into the git-ignored ``.device_data/`` for the GPU device.

    python3 scripts/default_model/pack_data.py            # FFHQ 1,090 + 500 UTKFace, scored, ~17 MB

Layout written (resumable: files already there are kept, the scores CSV resumes):

    .device_data/ffhq/NNNNN.jpg        ../shared/data/ffhq_train256, byte-for-byte copies (the source
                                       files are already JPEG q75 at 256 px: re-encoding could only
                                       lose detail or grow them)
    .device_data/utk/utk_NNNNN.jpg     a seeded random subset of utkface_train200 (200 px, tight crops),
                                       prefixed so names never collide with FFHQ's in the scores CSV;
                                       used by stage I only (codebook diversity), see README.md
    .device_data/scores.csv            `iqpfr score` over both folders together (one quality scale):
                                       the learned face scorer + NIQE, min-max normalised, averaged (S)
    .device_data/train_scores.csv      imagename, ensemble_S, score = the percentile rank of S in (0, 1)
                                       (what training reads, see below)
    .device_data/scores.csv.json, scores_hist.png, MANIFEST.json

Why ranks: min-max normalised S of our 1,090 faces sits in buckets 3-6 (none in bucket 9, three in 8),
but the quality embedding has one learned row per bucket floor(10 S) and inference asks for 0.9: a row
no face ever trained would add its random initialisation to the latent. The rank keeps the order of S
and fills every bucket with a tenth of the faces; HQ+ (S > 0.70) is then the best 30 %.

Prints the packed size, the checkout size and what is left of the device tool's 64 MiB.
Validation faces (gpen_ffhq10, gpen_ffhq_val_pairs) are never packed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dm_common as dm  # noqa: E402


def copy_faces(src_files: list[Path], dst_dir: Path, prefix: str = "") -> tuple[list[Path], list[str]]:
    """Copy image files byte-for-byte after checking that each decodes; returns (written, errors)."""
    from iqpfr.io import ImageReadError, read_rgb

    dst_dir.mkdir(parents=True, exist_ok=True)
    written, errors = [], []
    for src in src_files:
        dst = dst_dir / f"{prefix}{src.name}"
        if dst.is_file() and dst.stat().st_size == src.stat().st_size:
            written.append(dst)
            continue
        try:
            read_rgb(src)
        except ImageReadError as exc:
            errors.append(str(exc))
            continue
        tmp = dst.with_suffix(dst.suffix + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        written.append(dst)
    return written, errors


def choose_subset(files: list[Path], count: int, seed: int) -> list[Path]:
    """``count`` files chosen by a seeded permutation, returned in name order (deterministic)."""
    import numpy as np

    if count <= 0 or not files:
        return []
    files = sorted(files)
    pick = np.random.default_rng(seed).permutation(len(files))[: min(count, len(files))]
    return [files[i] for i in sorted(pick.tolist())]


def image_files(folder: Path) -> list[Path]:
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file())


def summarise_scores(csv_path: Path, threshold: float) -> dict:
    """HQ+ share (S > threshold) and mean S per source folder (ffhq / utk)."""
    import csv

    by_source: dict[str, list[float]] = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            source = "utk" if row["imagename"].startswith("utk_") else "ffhq"
            by_source.setdefault(source, []).append(float(row["score"]))
    out = {}
    for source, values in sorted(by_source.items()):
        n = len(values)
        out[source] = {"n": n, "mean_S": round(sum(values) / n, 4),
                       "hq_plus_share": round(sum(v > threshold for v in values) / n, 4)}
    return out


def write_rank_scores(scores_csv: Path, out_csv: Path) -> dict[str, float]:
    """``imagename, ensemble_S, score`` with score = the percentile rank of S in (0, 1) (ties averaged),
    the training loader's ``rank_scores``."""
    import csv
    import io

    from iqpfr.data.dataset import rank_scores
    from iqpfr.utils.fs import atomic_write_text

    with open(scores_csv, newline="") as fh:
        rows = [(r["imagename"], float(r["score"])) for r in csv.DictReader(fh)]
    ranks = rank_scores([s for _, s in rows]) if rows else []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["imagename", "ensemble_S", "score"])
    table = {}
    for (name, s), q in zip(rows, ranks):
        writer.writerow([name, f"{s:.6f}", f"{q:.6f}"])
        table[name] = float(q)
    atomic_write_text(out_csv, buf.getvalue())
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=dm.REPO / dm.DATA_DIR_NAME)
    ap.add_argument("--ffhq", type=Path, default=dm.SHARED_DATA / "ffhq_train256")
    ap.add_argument("--utk-dir", type=Path, default=dm.SHARED_DATA / "utkface_train200")
    ap.add_argument("--utk", type=int, default=0, help="UTKFace faces to pack (default 0: none, see README.md)")
    ap.add_argument("--limit", type=int, default=0, help="pack only the first N FFHQ faces (tests)")
    ap.add_argument("--metrics", default="face-iqa,niqe", help="`iqpfr score` metrics")
    ap.add_argument("--threshold", type=float, default=0.70, help="HQ+ threshold reported in the summary")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for scoring (the CPU is shared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-score", action="store_true", help="copy only (tests)")
    args = ap.parse_args(argv)

    if not args.ffhq.is_dir():
        print(f"pack_data: {args.ffhq}: training faces not found (set IQPFR_SHARED or --ffhq)", file=sys.stderr)
        return 2
    out: Path = args.out
    ffhq_files = image_files(args.ffhq)
    if args.limit:
        ffhq_files = ffhq_files[: args.limit]
    ffhq, errors = copy_faces(ffhq_files, out / "ffhq")
    utk: list[Path] = []
    if args.utk > 0:
        if not args.utk_dir.is_dir():
            print(f"pack_data: {args.utk_dir}: not found, packing no UTKFace faces", file=sys.stderr)
        else:
            utk, utk_errors = copy_faces(choose_subset(image_files(args.utk_dir), args.utk, args.seed),
                                         out / "utk", prefix="utk_")
            errors += utk_errors
    for msg in errors:
        print(f"pack_data: skipped {msg}", file=sys.stderr)

    scores = out / "scores.csv"
    summary = {}
    if not args.no_score:
        base = out.resolve()
        rel = base.relative_to(dm.REPO) if base.is_relative_to(dm.REPO) else base
        folders = [str(rel / "ffhq")] + ([str(rel / "utk")] if utk else [])
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        cmd = [sys.executable, "-m", "iqpfr", "score", *folders, "--metrics", args.metrics, "-o", str(scores),
               "--device", "cpu", "--threshold", str(args.threshold), "--hist", str(out / "scores_hist.png")]
        print("pack_data: " + " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, env=env, cwd=dm.REPO).returncode
        if rc != 0 or not scores.is_file():
            print(f"pack_data: `iqpfr score` failed (exit {rc})", file=sys.stderr)
            return 1
        summary = summarise_scores(scores, args.threshold)
        write_rank_scores(scores, out / "train_scores.csv")

    data_bytes = dm.folder_bytes(out)
    manifest = {
        "ffhq_faces": len(ffhq), "utk_faces": len(utk), "bytes": data_bytes,
        "sources": {"ffhq": str(args.ffhq), "utk": str(args.utk_dir) if utk else None},
        "licences": {"ffhq": "FFHQ, CC BY-NC-SA 4.0 (NVIDIA); each photo keeps its Flickr licence",
                     "utk": "UTKFace, non-commercial research only"},
        "encoding": "byte-for-byte copies of the source JPEGs (IJG quality 75)",
        "scores": {"csv": scores.name, "train_csv": "train_scores.csv (score = percentile rank of S)",
                   "metrics": args.metrics, "threshold": args.threshold,
                   "sha256": dm.sha256_file(scores) if scores.is_file() else None, "by_source": summary},
        "utk_seed": args.seed,
    }
    dm.write_json(out / "MANIFEST.json", manifest)
    data_bytes = dm.folder_bytes(out)
    checkout = dm.checkout_bytes()
    left = dm.TREE_LIMIT - checkout - data_bytes
    print(f"packed {len(ffhq)} FFHQ + {len(utk)} UTKFace faces into {out}: {data_bytes / dm.MIB:.1f} MiB")
    for source, s in summary.items():
        print(f"  {source}: {s['n']} faces, mean S {s['mean_S']:.3f}, HQ+ share (S > {args.threshold}) "
              f"{100 * s['hq_plus_share']:.1f}%")
    print(f"checkout {checkout / dm.MIB:.1f} MiB + data {data_bytes / dm.MIB:.1f} MiB = "
          f"{(checkout + data_bytes) / dm.MIB:.1f} MiB of the device's 64 MiB; {left / dm.MIB:.1f} MiB left "
          f"for {dm.CKPT_DIR_NAME}/ (a cold restart of stage III carries ~44 MiB)")
    if summary:
        print(f"  training reads train_scores.csv: score = percentile rank of S, so the HQ+ share "
              f"(score > {args.threshold}) is {100 * (1 - args.threshold):.0f}% and every bucket holds a tenth")
    if left < 0:
        print("pack_data: too large for the device tool: pack fewer UTKFace faces (--utk)", file=sys.stderr)
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
