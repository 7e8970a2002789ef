"""``iqpfr iqa``: tools for the quality scorers.

  iqpfr iqa list                                  built-in scorers and their properties
  iqpfr iqa fit-niqe DIR... -o model.npz          fit a (face-specific) NIQE pristine model
  iqpfr iqa train CONFIG [--set key=value ...]    train the face-iqa network (configs/iqa_face.yaml)
  iqpfr iqa eval [--weights W] [--metrics ...]    measure scorers on held-out and real LQ faces
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHARED_DATA = Path("../shared/data")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("iqa", help="quality-scorer tools: list, fit-niqe, train, eval",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="iqa_command", metavar="SUBCOMMAND")

    q = sub.add_parser("list", help="list the built-in scorers")
    q.set_defaults(func=run_list)

    q = sub.add_parser("fit-niqe", help="fit a NIQE pristine model from a folder of good images")
    q.add_argument("inputs", nargs="+", metavar="DIR", help="folders or files of high-quality images")
    q.add_argument("-o", "--output", required=True, help="model .npz to write")
    q.add_argument("--sharpness", type=float, default=0.75,
                   help="keep blocks whose local deviation is >= this fraction of the image's sharpest (0.75)")
    q.add_argument("--size", type=int, default=0, help="resize images to SIZE x SIZE first (0 = keep)")
    q.add_argument("--recursive", action="store_true")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output")
    q.set_defaults(func=run_fit_niqe)

    q = sub.add_parser("train", help="train the face-iqa network (offline, CPU-sized)")
    q.add_argument("config", help="YAML config, e.g. configs/iqa_face.yaml")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set steps=100")
    q.set_defaults(func=run_train)

    q = sub.add_parser("eval", help="measure scorers on held-out synthetic and real LQ faces")
    q.add_argument("--metrics", default="face-iqa", help="comma-separated scorers (default: face-iqa)")
    q.add_argument("--weights", default=None, help="face-iqa weights (default: the shipped ones)")
    q.add_argument("--data", default=str(SHARED_DATA), help="the shared data folder (default ../shared/data)")
    q.add_argument("--holdout", type=int, default=90,
                   help="use the last N files of ffhq_train256 (the training hold-out; default 90)")
    q.add_argument("--degraded", type=int, default=4, help="degraded copies per face (default 4)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--size", type=int, default=512, help="faces are scored at SIZE x SIZE (default 512)")
    q.add_argument("--device", default="auto")
    q.add_argument("--json", default=None, help="also write the results to this JSON file")
    q.set_defaults(func=run_eval)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def run_list(args: argparse.Namespace) -> int:
    from iqpfr.quality.registry import create_scorer, list_scorers

    for name in list_scorers():
        try:
            s = create_scorer(name)
            print(f"{name:10s} higher_better={s.higher_better!s:5s} differentiable={s.differentiable!s:5s} "
                  f"range={s.range}")
        except Exception as exc:  # e.g. brisque without a model file
            print(f"{name:10s} not usable without arguments: {exc}")
    print("pyiqa:<metric>  any pyiqa metric (optional extra: pip install 'iqpfr[iqa]')")
    return 0


def run_fit_niqe(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from iqpfr.cli import CLIError
    from iqpfr.cli.score import expand_inputs
    from iqpfr.io import ImageReadError, read_rgb
    from iqpfr.quality.niqe import fit_pristine_model, save_pristine_model
    from iqpfr.quality.synth import to_size

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out}: exists (use --overwrite to replace it)")
    paths = expand_inputs(args.inputs, args.recursive)
    if not paths:
        raise CLIError("no image files found in the inputs")
    images, failed = [], 0
    for p in paths:
        try:
            img = read_rgb(p)
        except ImageReadError as exc:
            print(f"iqpfr iqa fit-niqe: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.size:
            img = to_size(img, args.size)
        if min(img.shape[:2]) < 96:
            print(f"iqpfr iqa fit-niqe: {p}: smaller than 96x96, skipped", file=sys.stderr)
            failed += 1
            continue
        images.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).double() / 255.0)
    if not images:
        raise CLIError("no usable images")
    try:
        mu, cov, n_blocks = fit_pristine_model(images, sharpness_threshold=args.sharpness)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    save_pristine_model(out, mu, cov, images=str(len(images)), blocks=str(n_blocks),
                        sharpness=str(args.sharpness), size=str(args.size or "native"))
    print(f"NIQE pristine model from {len(images)} images ({n_blocks} sharp blocks) -> {out}")
    print(f"use it with: iqpfr score ... --metrics niqe --niqe-params {out}")
    return 1 if failed else 0


def run_train(args: argparse.Namespace) -> int:
    from iqpfr.cli import CLIError
    from iqpfr.config import ConfigError, load_config
    from iqpfr.quality.learned_train import FaceIQATrainConfig, train

    try:
        cfg = load_config(FaceIQATrainConfig, args.config, args.overrides)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    try:
        weights = train(cfg, log=lambda m: print(m, flush=True))
    except FileNotFoundError as exc:
        raise CLIError(str(exc)) from None
    print(f"weights: {weights}  (use: create_scorer('face-iqa', weights='{weights}'))")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import json

    from iqpfr.cli import CLIError
    from iqpfr.io import list_images
    from iqpfr.quality import evaluate as ev
    from iqpfr.quality.registry import create_scorer
    from iqpfr.utils.device import resolve_device

    data = Path(args.data)
    if not data.is_dir():
        raise CLIError(f"{data}: data folder not found (pass --data)")

    def files(sub: str) -> list[Path]:
        folder = data / sub
        return [p for p, _ in list_images([folder])] if folder.is_dir() else []

    holdout = files("ffhq_train256")[-args.holdout:] if args.holdout > 0 else []
    hq10 = files("gpen_ffhq10")
    sets = {
        "holdout": ev.read_faces(holdout),
        "gpen_ffhq10": ev.read_faces(hq10),
        "val_pairs_hq": ev.read_faces(files("gpen_ffhq_val_pairs/hq")),
        "val_pairs_lq": ev.read_faces(files("gpen_ffhq_val_pairs/lq")),
        "codeformer_cropped_faces": ev.read_faces(files("codeformer_cropped_faces")),
        "codeformer_gray_faces": ev.read_faces(files("codeformer_gray_faces")),
    }
    device = resolve_device(args.device)
    results: dict = {"holdout_files": f"{holdout[0].name}..{holdout[-1].name}" if holdout else "", "metrics": {}}
    for name in [m.strip() for m in args.metrics.split(",") if m.strip()]:
        kwargs = {"weights": args.weights} if name == "face-iqa" and args.weights else {}
        try:
            scorer = create_scorer(name, **kwargs).to(device).eval()
        except (ImportError, FileNotFoundError, ValueError) as exc:
            raise CLIError(f"metric {name!r}: {exc}") from None
        common = {"size": args.size, "device": device}
        r: dict = {}
        clean = sets["holdout"] + sets["gpen_ffhq10"]
        r["strength_holdout"] = ev.strength_correlation(scorer, sets["holdout"], n_degraded=args.degraded,
                                                        seed=args.seed, **common)
        r["strength_gpen_ffhq10"] = ev.strength_correlation(scorer, sets["gpen_ffhq10"], n_degraded=args.degraded,
                                                            seed=args.seed, **common)
        r["pairs_large"] = ev.pair_accuracy(scorer, clean, preset="large", seed=args.seed, **common)
        r["pairs_small"] = ev.pair_accuracy(scorer, clean, preset="small", seed=args.seed, **common)
        hq_val = ev.oriented_scores(scorer, [ev.to_size(f, args.size) for f in sets["val_pairs_hq"]], device=device)
        lq_val = ev.oriented_scores(scorer, [ev.to_size(f, args.size) for f in sets["val_pairs_lq"]], device=device)
        r["gpen_val_pairs_hq_higher"] = float((hq_val > lq_val).mean()) if len(hq_val) else None
        dist = {k: ev.score_distribution(scorer, v, **common) for k, v in sets.items() if v}
        r["distributions"] = dist
        hq_scores = ev.oriented_scores(scorer, [ev.to_size(f, args.size) for f in clean], device=device)
        real_lq = sets["codeformer_cropped_faces"] + sets["codeformer_gray_faces"]
        lq_scores = ev.oriented_scores(scorer, [ev.to_size(f, args.size) for f in real_lq], device=device)
        r["auc_hq_vs_real_lq"] = ev.auc(hq_scores, lq_scores)
        r["info"] = {"higher_better": scorer.higher_better, **scorer.extra_info()}
        results["metrics"][name] = r
        _print_eval(name, r)
    if args.json:
        from iqpfr.utils.fs import atomic_write_text

        for r in results["metrics"].values():
            for k in ("pairs_large", "pairs_small"):
                r[k].pop("margins", None)
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
        print(f"results: {args.json}")
    return 0


def _print_eval(name: str, r: dict) -> None:
    s, g = r["strength_holdout"], r["strength_gpen_ffhq10"]
    print(f"== {name}")
    print(f"  Spearman(score, -strength), held-out ffhq ({s['n_faces']} faces, {s['n_images']} images): "
          f"pooled {s['spearman_pooled']:.3f}, per-face mean {s['spearman_per_face_mean']:.3f}")
    print(f"  Spearman on gpen_ffhq10 ({g['n_images']} images): pooled {g['spearman_pooled']:.3f}, "
          f"per-face mean {g['spearman_per_face_mean']:.3f}")
    print(f"  HQ face above its degraded copy: large {r['pairs_large']['fraction_hq_higher']:.3f}, "
          f"small {r['pairs_small']['fraction_hq_higher']:.3f} (n={r['pairs_large']['n']}); "
          f"gpen val pairs {r['gpen_val_pairs_hq_higher']}")
    print(f"  AUC clean HQ vs real LQ (codeformer cropped+gray): {r['auc_hq_vs_real_lq']:.3f}")
    for k, d in r["distributions"].items():
        print(f"  {k:26s} n={d['n']:3d} mean {d['mean']:8.3f} std {d['std']:7.3f} "
              f"median {d['median']:8.3f} [{d['min']:.3f}, {d['max']:.3f}]")
