"""Evaluate the underwater enhancer on the held-out LSUI pairs (file numbers divisible by 5).

    python scripts/underwater/evaluate.py [--weights W] [--data ../shared/data/lsui_test108]
        [--out benchmarks/results] [--sheet docs/underwater_contact_sheet.png]

Writes ``underwater_eval.json`` / ``.md`` (per method mean PSNR, SSIM, CIEDE2000, UIQM, UCIQE; the
quality-target sweep with Spearman's rho) and the contact sheet. One CPU thread unless --threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--data", default="../shared/data/lsui_test108")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--sheet", default="docs/underwater_contact_sheet.png")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N held-out pairs")
    parser.add_argument("--sweep", default="",
                        help="quality targets, comma-separated (default: 6 evenly over the calibrated range)")
    parser.add_argument("--all-pairs", action="store_true", help="also score the training pairs (fit check)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from iqpfr.tasks.underwater.enhancer import UnderwaterEnhancer
    from iqpfr.tasks.underwater.evaluate import (
        clahe_l,
        full_metrics,
        gray_world,
        no_reference_scores,
        spearman,
    )
    from iqpfr.tasks.underwater.train import load_pair, pair_numbers

    torch.set_num_threads(args.threads)
    enhancer = UnderwaterEnhancer.from_pretrained(args.weights)
    numbers = pair_numbers(args.data, heldout=True)
    if args.limit:
        numbers = numbers[: args.limit]
    if args.sweep:
        targets = {float(v) for v in args.sweep.split(",")}
    else:
        q = enhancer.info["calibration"]["q"]
        targets = {round(float(v), 3) for v in np.linspace(q[0], q[-1], 6)}
    sweep = sorted(targets | {round(enhancer.default_quality, 3)})
    methods = {"input": lambda x: x, "gray-world": gray_world, "clahe-L": clahe_l,
               "iqpfr-underwater": lambda x: enhancer.enhance(x)}
    per_image: dict[str, list[dict]] = {m: [] for m in methods}
    sweep_scores = {q: [] for q in sweep}
    sheet_rows, seconds = [], []
    for n in numbers:
        raw, ref = load_pair(args.data, n)
        outputs = {}
        for name, fn in methods.items():
            t0 = time.perf_counter()
            out = fn(raw)
            if name == "iqpfr-underwater":
                seconds.append(time.perf_counter() - t0)
            outputs[name] = out
            per_image[name].append({"n": n, **full_metrics(out, ref)})
        for q in sweep:
            out = outputs["iqpfr-underwater"] if abs(q - enhancer.default_quality) < 1e-9 else enhancer.enhance(raw, quality=q)
            sweep_scores[q].append(no_reference_scores(out))
        if len(sheet_rows) < 6 and n % 2 == 0:
            sheet_rows.append((n, raw, outputs, enhancer.enhance(raw, quality=max(sweep)), ref))
        print(f"{n}: " + ", ".join(f"{m} {per_image[m][-1]['psnr']:.2f}" for m in methods), flush=True)

    keys = ("psnr", "ssim", "ciede2000", "uiqm", "uciqe")
    summary = {m: {k: float(np.mean([r[k] for r in rows])) for k in keys} for m, rows in per_image.items()}
    reference = [no_reference_scores(load_pair(args.data, n)[1]) for n in numbers]
    summary["reference"] = {"uiqm": float(np.mean([r["uiqm"] for r in reference])),
                            "uciqe": float(np.mean([r["uciqe"] for r in reference]))}
    sweep_table = [{"q": q, "uiqm": float(np.mean([s["uiqm"] for s in sweep_scores[q]])),
                    "uciqe": float(np.mean([s["uciqe"] for s in sweep_scores[q]]))} for q in sweep]
    per_image_rho = {k: float(np.median([spearman(sweep, [sweep_scores[q][i][k] for q in sweep])
                                         for i in range(len(numbers))])) for k in ("uiqm", "uciqe")}
    result = {
        "data": str(args.data), "split": "held out: file numbers divisible by 5", "pairs": numbers,
        "weights": enhancer.info.get("weights"), "default_quality": enhancer.default_quality,
        "summary": summary, "sweep": sweep_table,
        "spearman_mean": {k: spearman(sweep, [r[k] for r in sweep_table]) for k in ("uiqm", "uciqe")},
        "spearman_per_image_median": per_image_rho,
        "seconds_per_image_mean": float(np.mean(seconds)), "threads": args.threads,
        "per_image": per_image,
        "command": "python scripts/underwater/evaluate.py " + " ".join(sys.argv[1:]),
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    from iqpfr.utils.fs import atomic_write_text

    atomic_write_text(out_dir / "underwater_eval.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out_dir / "underwater_eval.md", markdown(result) + "\n")
    if args.sheet and sheet_rows:
        contact_sheet(sheet_rows, args.sheet)
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = [f"Held-out LSUI pairs ({len(result['pairs'])}, {result['split']}); default q = "
             f"{result['default_quality']:.3f}", "",
             "| method | PSNR (dB) | SSIM | CIEDE2000 | UIQM | UCIQE |", "|---|---|---|---|---|---|"]
    for m, v in result["summary"].items():
        if m == "reference":
            lines.append(f"| reference (GT) | | | | {v['uiqm']:.3f} | {v['uciqe']:.3f} |")
            continue
        lines.append(f"| {m} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['ciede2000']:.2f} | {v['uiqm']:.3f} | {v['uciqe']:.3f} |")
    lines += ["", "| quality target q | UIQM | UCIQE |", "|---|---|---|"]
    lines += [f"| {r['q']:.3f} | {r['uiqm']:.3f} | {r['uciqe']:.3f} |" for r in result["sweep"]]
    sm, sp = result["spearman_mean"], result["spearman_per_image_median"]
    lines += ["", f"Spearman rho (q vs mean score): UIQM {sm['uiqm']:.2f}, UCIQE {sm['uciqe']:.2f}; "
              f"per image (median): UIQM {sp['uiqm']:.2f}, UCIQE {sp['uciqe']:.2f}.",
              f"Model time per image: {result['seconds_per_image_mean']:.2f} s on {result['threads']} thread(s)."]
    return "\n".join(lines)


def contact_sheet(rows, path: str, height: int = 160) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    from iqpfr.utils.fs import atomic_path

    columns = ["input", "gray-world", "CLAHE-L", "ours (default q)", "ours (q max)", "reference"]
    tiles = []
    for _n, raw, outs, high, ref in rows:
        images = [raw, outs["gray-world"], outs["clahe-L"], outs["iqpfr-underwater"], high, ref]
        width = round(raw.shape[1] * height / raw.shape[0])
        tiles.append([Image.fromarray(np.asarray(im)).resize((width, height), Image.BILINEAR) for im in images])
    col_w = max(t[0].width for t in tiles)
    sheet = Image.new("RGB", (col_w * len(columns), 18 + height * len(tiles)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, name in enumerate(columns):
        draw.text((j * col_w + 4, 3), name, fill="black")
    for i, row in enumerate(tiles):
        for j, im in enumerate(row):
            sheet.paste(im, (j * col_w, 18 + i * height))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


if __name__ == "__main__":
    sys.exit(main())
