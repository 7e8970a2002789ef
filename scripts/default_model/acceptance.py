"""Measure issue 8's "Done when" list for a restoration model, with the `iqpfr eval` machinery.

    python3 scripts/default_model/acceptance.py                       # the shipped default model
    python3 scripts/default_model/acceptance.py --weights FILE.safetensors -o runs/acceptance_x

Protocol (everything seeded, re-runs reproduce the numbers and resume from the files written; OUT's
``run.json`` names the model and test set, and another model's or test set's OUT is refused):

* Validation faces ``../shared/data/gpen_ffhq10`` (never trained on), degraded with the "large"
  preset, seed 0, at 512 px (``iqpfr make-testset --protocol large --seed 0``).
* **Restored**: each LQ face resized to the network's input (area), restored with fidelity w = 0.5
  and quality target 0.9 (the defaults of ``iqpfr restore``), resized back to 512 (bicubic).
  **Bicubic**: the same LQ face resized to the network's input and back to 512 bicubically, i.e.
  exactly the information the network sees, without the network.
* identity: mean ``ids_l2`` (dlib ResNet embedding distance to the GT; lower) and the dlib HOG
  face-detection rate of the images (restored at least as often as bicubic);
* NIQE (``niqe``, standard pristine parameters): restored lower than bicubic by >= 2;
* quality target: mean learned-scorer score (``face-iqa``) of the outputs for targets 0.1 ... 0.9,
  Spearman correlation with the target >= 0.8 (their mean NIQE is reported beside it, not checked);
  HQ+ branch: alpha = 0 scores lower than alpha = 0.8;
* time to restore one aligned 256x256 face with 2 CPU threads (``FaceRestorer.restore``, the network
  plus the resizes to and from its size; median of 5) < 1 s; the network alone from
  ``benchmarks/model_cpu_time.py`` beside it.

Writes ``OUT/acceptance.json`` and ``OUT/acceptance.md`` (the model-card table) and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dm_common as dm  # noqa: E402

TARGETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def bicubic_baseline(lq_dir: Path, gt_dir: Path, out_dir: Path, side: int) -> None:
    """LQ -> network input size (area) -> GT size (bicubic), written as PNG (kept if present)."""
    import cv2

    from iqpfr.io import list_images, read_rgb, write_rgb

    for path, rel in list_images([lq_dir]):
        target = out_dir / rel.with_suffix(".png")
        if target.exists():
            continue
        lq = read_rgb(path)
        gt = read_rgb(gt_dir / rel.with_suffix(".png"))
        small = cv2.resize(lq, (side, side), interpolation=cv2.INTER_AREA if lq.shape[0] > side else cv2.INTER_CUBIC)
        write_rgb(target, cv2.resize(small, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_CUBIC))


def restore(model, lq_dir: Path, gt_dir: Path, out_dir: Path, *, w: float, quality: float) -> None:
    from iqpfr.eval.sweep import restore_folder
    from iqpfr.io import read_rgb

    failures = restore_folder(model, lq_dir, out_dir, w=w, quality=quality, batch_size=4, device="cpu",
                              size_of=lambda key, lq: read_rgb(gt_dir / f"{key}.png").shape[:2],
                              log=lambda m: print(m, file=sys.stderr), progress=False)
    if failures:
        raise SystemExit(f"restoring {lq_dir} failed: {failures[:3]}")


def evaluate(pred: Path, gt: Path | None, metrics: list[str], csv_path: Path) -> dict[str, float]:
    """Mean of every column of ``iqpfr eval`` for ``pred``."""
    from iqpfr.eval.runner import EvalConfig
    from iqpfr.eval.runner import evaluate as run_eval

    cfg = EvalConfig(pred_dir=pred, out_csv=csv_path, gt_dir=gt, metrics=tuple(metrics), device="cpu",
                     plots=False, progress=False)
    result = run_eval(cfg, lambda m: print(m, file=sys.stderr))
    if result.failures:
        print(f"acceptance: {len(result.failures)} failures in {pred}: {result.failures[:2]}", file=sys.stderr)
    return {k: float(v.get("mean", float("nan"))) for k, v in result.summary["metrics"].items()}


def detection_rate(folder: Path) -> float:
    """Share of images in which dlib's HOG detector finds a face (the eval face-box protocol)."""
    from iqpfr.eval.dlib_models import face_box
    from iqpfr.io import list_images, read_rgb

    found = [face_box(read_rgb(p))[1] for p, _ in list_images([folder])]
    return sum(found) / max(len(found), 1)


def cpu_time(preset: str, threads: int, repeats: int) -> dict[str, float]:
    """Per-face wall / CPU seconds of the network alone from ``benchmarks/model_cpu_time.py``."""
    script = dm.REPO / "benchmarks" / "model_cpu_time.py"
    cmd = [sys.executable, str(script), preset, "--threads", str(threads), "--repeats", str(repeats)]
    text = subprocess.run(cmd, capture_output=True, text=True, cwd=dm.REPO).stdout
    m = re.search(r"(\d+)\s*ms wall\s+(\d+)\s*ms CPU", text)
    if not m:
        return {"wall_s": float("nan"), "cpu_s": float("nan"), "output": text[-300:]}
    return {"wall_s": int(m.group(1)) / 1000, "cpu_s": int(m.group(2)) / 1000}


def restore_time(model, face_png: Path, threads: int, repeats: int) -> dict[str, float]:
    """Median wall / CPU seconds of ``FaceRestorer.restore(aligned=True)`` on one 256x256 face (uint8
    in, uint8 out: resize to the network, the network, resize back), after one warm-up call."""
    import statistics
    import time

    import cv2
    import torch

    from iqpfr.io import read_rgb
    from iqpfr.restorer import FaceRestorer

    torch.set_num_threads(threads)
    face = cv2.resize(read_rgb(face_png), (256, 256), interpolation=cv2.INTER_AREA)
    restorer = FaceRestorer(model, device="cpu", description="acceptance")
    restorer.restore(face, aligned=True)
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        restorer.restore(face, aligned=True)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "threads": threads}


def with_alpha(model, alpha: float):
    other = copy.deepcopy(model)
    other.quantize.alpha = alpha
    if hasattr(other, "alpha"):
        other.alpha = alpha
    return other


def spearman(xs, ys) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def table_markdown(rows: list[dict]) -> str:
    lines = ["| check | restored | bicubic / reference | criterion | pass |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['check']} | {r['value']} | {r['reference']} | {r['criterion']} | "
                     f"{'yes' if r['pass'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=None, help="default: the shipped default model")
    ap.add_argument("-o", "--out", type=Path, default=dm.REPO / "runs" / "acceptance")
    ap.add_argument("--val", type=Path, default=dm.SHARED_DATA / "gpen_ffhq10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512, help="test-set side (the preset's native 512)")
    ap.add_argument("--limit", type=int, default=0, help="first N validation faces only (tests)")
    ap.add_argument("--fidelity", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (CPU-time row always uses 2)")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--adain", choices=("file", "on", "off"), default="file",
                    help="AdaIN before decoding as the weight file says, or forced on / off")
    args = ap.parse_args(argv)

    import torch

    from iqpfr.eval.sweep import claim_output_folder, model_fingerprint
    from iqpfr.eval.testset import make_testset
    from iqpfr.io import list_images
    from iqpfr.restorer import embedded_weights_path, model_input_size
    from iqpfr.weights.checkpoint import load_model

    args.weights = args.weights or embedded_weights_path()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    model = load_model(args.weights, **({} if args.adain == "file" else {"adain": args.adain == "on"})).eval()
    side = model_input_size(model)
    preset = getattr(model, "preset", None) or "iqpfr-256"
    hq = [p for p, _ in list_images([args.val])]
    hq = hq[: args.limit] if args.limit else hq
    # everything in OUT is resumed; it must come from this model (AdaIN setting included) and test set
    try:
        claim_output_folder(out, {"model": model_fingerprint(model), "val": args.val.resolve(), "seed": args.seed,
                                  "size": args.size, "limit": args.limit})
    except ValueError as exc:
        raise SystemExit(f"acceptance: {exc}") from None
    make_testset(hq, out / "testset", protocol="large", seed=args.seed, size=args.size, progress=False,
                 log=lambda m: None)
    lq_dir, gt_dir = out / "testset" / "lq", out / "testset" / "gt"
    w = args.fidelity

    bicubic_baseline(lq_dir, gt_dir, out / "bicubic", side)
    main_dir = out / f"restored_w{w:g}_q0.9"
    restore(model, lq_dir, gt_dir, main_dir, w=w, quality=0.9)
    metrics = ["ids", "niqe", "face-iqa"]
    res = evaluate(main_dir, gt_dir, metrics, out / "restored.csv")
    base = evaluate(out / "bicubic", gt_dir, metrics, out / "bicubic.csv")
    lq_as_is = evaluate(lq_dir, gt_dir, metrics, out / "lq.csv")  # the 512-px LQ itself, for reference
    det_res, det_base, det_gt = detection_rate(main_dir), detection_rate(out / "bicubic"), detection_rate(gt_dir)

    sweep, sweep_niqe = {}, {}  # NIQE beside the learned score: a check independent of training's scorer
    for q in TARGETS:
        d = out / f"restored_w{w:g}_q{q:g}"
        restore(model, lq_dir, gt_dir, d, w=w, quality=q)
        means = evaluate(d, None, ["face-iqa", "niqe"], out / f"sweep_q{q:g}.csv")
        sweep[q], sweep_niqe[q] = means["face-iqa"], means["niqe"]
    rho = spearman(list(sweep), list(sweep.values()))
    rho_niqe = spearman(list(sweep_niqe), [-v for v in sweep_niqe.values()])
    alpha0_dir = out / f"restored_w{w:g}_q0.9_alpha0"
    restore(with_alpha(model, 0.0), lq_dir, gt_dir, alpha0_dir, w=w, quality=0.9)
    alpha0 = evaluate(alpha0_dir, None, ["face-iqa"], out / "alpha0.csv")["face-iqa"]
    alpha = float(model.quantize.alpha)
    nan = {"wall_s": float("nan"), "cpu_s": float("nan")}
    timing = nan if args.no_timing else restore_time(model, gt_dir / sorted(p.name for p in gt_dir.glob("*.png"))[0], 2, 5)
    network_timing = nan if args.no_timing else cpu_time(preset, 2, 5)
    torch.set_num_threads(args.threads)

    rows = [
        {"check": "identity: mean dlib distance to GT (ids_l2)", "value": fmt(res["ids_l2"]),
         "reference": fmt(base["ids_l2"]), "criterion": "restored < bicubic", "pass": res["ids_l2"] < base["ids_l2"]},
        {"check": "identity: dlib face-detection rate", "value": fmt(det_res, 2),
         "reference": f"{det_base:.2f} (GT {det_gt:.2f})", "criterion": "restored >= bicubic",
         "pass": det_res >= det_base},
        {"check": "NIQE (standard pristine model)", "value": fmt(res["niqe"], 2), "reference": fmt(base["niqe"], 2),
         "criterion": "restored <= bicubic - 2", "pass": res["niqe"] <= base["niqe"] - 2.0},
        {"check": "face-iqa score vs quality target 0.1..0.9 (Spearman)", "value": fmt(rho, 2),
         "reference": " ".join(f"{v:.3f}" for v in sweep.values()), "criterion": ">= 0.8", "pass": rho >= 0.8},
        {"check": f"HQ+ branch: face-iqa at alpha {alpha:g} vs alpha 0", "value": fmt(res["face-iqa"]),
         "reference": fmt(alpha0), "criterion": "alpha 0 scores lower", "pass": alpha0 < res["face-iqa"]},
        {"check": f"time to restore one aligned 256x256 face, 2 CPU threads ({preset} at {side} px)",
         "value": f"{timing['wall_s']:.3f} s", "reference": f"CPU {timing['cpu_s']:.2f} s; network alone "
         f"{network_timing['wall_s']:.3f} s", "criterion": "< 1 s", "pass": timing["wall_s"] < 1.0},
    ]
    n = len(list(gt_dir.glob("*.png")))
    report = {
        "weights": str(args.weights), "sha256": dm.sha256_file(args.weights), "faces": n, "seed": args.seed,
        "protocol": f"{args.val.name} 'large' seed {args.seed} at {args.size}px; restored at w={w:g}, q=0.9; "
                    f"bicubic = LQ -> {side}px (area) -> {args.size}px (bicubic)",
        "restored": res, "bicubic": base, "lq_as_is": lq_as_is, "detection": {"restored": det_res, "bicubic": det_base, "gt": det_gt},
        "quality_sweep": {f"{q:g}": v for q, v in sweep.items()}, "spearman": rho,
        "quality_sweep_niqe": {f"{q:g}": v for q, v in sweep_niqe.items()}, "spearman_minus_niqe": rho_niqe,
        "alpha": alpha, "alpha0_face_iqa": alpha0, "cpu_time": timing,
        "network_cpu_time": network_timing, "rows": rows,
        "all_pass": all(r["pass"] for r in rows),
    }
    dm.write_json(out / "acceptance.json", report)
    md = (f"Validation: {n} faces of `{args.val.name}`, {report['protocol']}.\n\n" + table_markdown(rows))
    from iqpfr.utils.fs import atomic_write_text

    atomic_write_text(out / "acceptance.md", md)
    print(md)
    print(f"NIQE at q = {' / '.join(f'{q:g}' for q in TARGETS)}: {' / '.join(f'{v:.2f}' for v in sweep_niqe.values())} "
          f"(Spearman of -NIQE with q: {rho_niqe:.2f}; not a pass/fail check)")
    print(json.dumps({"all_pass": report["all_pass"]}))
    return 0 if report["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
