"""Evaluate face colour enhancement (issue 22) and draw its contact sheets.

    python3 scripts/color/evaluate.py [--color-weights iqpfr-128-color] [--out benchmarks/results]

1. Aligned validation faces with ground truth (``../shared/data/gpen_ffhq10``, FFHQ 00000-00009,
   never trained on; ``gpen_ffhq_val_pairs/hq`` are the same ids, so not added), at 128 px, made
   *gray*, *faded* (saturation x U(0.15, 0.4), contrast x U(0.55, 0.8)) and *cast* (per-channel gain
   U(0.75, 1.25) and shift U(-20, 20)/255) with seed 0. Methods: the input, gray-world, a per-channel
   histogram stretch (1st-99th percentile), the shipped ``iqpfr-128`` and the colour model, both at
   w = 0, q = 0.95. Metrics against the GT: CIEDE2000 (mean over pixels), colourfulness
   (Hasler-Suesstrunk) relative to the GT's, dlib identity distance (degrees), NIQE.
2. Real gray faces (``codeformer_gray_faces``): colourfulness; ``docs/color_contact_sheet.png``.
3. Whole photos (``codeformer_whole_imgs``) made gray and faded: the ``ColorEnhancer`` whole-photo
   path (gray: ``gray_background`` keep vs tone; faded: the fitted map vs faces only) against the
   original photo; ``docs/color_whole_photos.png``.

Writes benchmarks/results/color_eval.json and color_eval.md. CPU, one thread: a few minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
SIZE = 128


# ------------------------------------------------------------------------------ degradations


def to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 RGB -> 3-channel gray (ITU-R 601 luma, as PIL's "L")."""
    y = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.repeat(np.clip(np.round(y), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def fade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lower saturation and contrast (an old, faded print)."""
    x = img.astype(np.float64)
    gray = to_gray(img).astype(np.float64)
    x = gray + rng.uniform(0.15, 0.4) * (x - gray)
    x = x.mean() + rng.uniform(0.55, 0.8) * (x - x.mean())
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def cast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour cast: per-channel gain and shift."""
    x = img.astype(np.float64) * rng.uniform(0.75, 1.25, 3) + rng.uniform(-20, 20, 3)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def degrade(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    return {"gray": lambda: to_gray(img), "faded": lambda: fade(img, rng), "cast": lambda: cast(img, rng)}[kind]()


# ------------------------------------------------------------------------------ baselines


def gray_world(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float64)
    means = x.reshape(-1, 3).mean(0) + 1e-6
    return np.clip(np.round(x * (means.mean() / means)), 0, 255).astype(np.uint8)


def hist_stretch(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float64)
    out = np.empty_like(x)
    for c in range(3):
        lo, hi = np.percentile(x[..., c], [1, 99])
        out[..., c] = (x[..., c] - lo) / max(hi - lo, 1.0) * 255.0
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ helpers


def load_rgb(path: Path, size: int | None = None) -> np.ndarray:
    from PIL import Image

    img = Image.open(path).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    return np.asarray(img)


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def run_model(restorer, faces: list[np.ndarray], quality: float = 0.95) -> list[np.ndarray]:
    import torch

    x = torch.from_numpy(np.stack(faces).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        y = restorer.restore_aligned(x, fidelity=0.0, quality=quality)
    return [np.clip(np.round(f * 255.0), 0, 255).astype(np.uint8) for f in y.permute(0, 2, 3, 1).numpy()]


def mapped(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> list[np.ndarray]:
    """Each input face recoloured by the 3x4 map fitted from it to the model's output (mean-face soft
    mask): the model's colours on the input's own structure (what the whole-photo step does)."""
    from iqpfr.face.paste import soft_face_mask
    from iqpfr.tasks.color.transform import apply_color_transform, fit_color_transform

    mask = soft_face_mask(SIZE)
    res = []
    for x, y in zip(inputs, outputs):
        xf, yf = x.astype(np.float32) / 255.0, y.astype(np.float32) / 255.0
        m = fit_color_transform(xf, yf, mask, reg=1e-2)
        res.append(np.clip(np.round(apply_color_transform(xf, m) * 255.0), 0, 255).astype(np.uint8))
    return res


def transferred(inputs: list[np.ndarray], outputs: list[np.ndarray], method: str = "mk") -> list[np.ndarray]:
    """The shipped default (``recolor_result`` on an aligned face): each input face recoloured by
    moment matching (CIELab, mean-face soft mask) toward the model's output; a gray input gets the
    output's blurred a/b times the default chroma factor on its own lightness."""
    from iqpfr.face.paste import soft_face_mask
    from iqpfr.tasks.color.enhancer import DEFAULT_CHROMA, GRAY_BLUR
    from iqpfr.tasks.color.transfer import chroma_from_reference, fit_transfer
    from iqpfr.tasks.color.transform import is_gray

    mask = soft_face_mask(SIZE)
    res = []
    for x, y in zip(inputs, outputs):
        xf, yf = x.astype(np.float32) / 255.0, y.astype(np.float32) / 255.0
        if is_gray(xf):
            out = chroma_from_reference(xf, yf, chroma=DEFAULT_CHROMA, blur=GRAY_BLUR)
        else:
            out = fit_transfer(xf, yf, mask, method=method, space="lab", blur=0.0).apply(xf)
        res.append(np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8))
    return res


def niqe_scores(images: list[np.ndarray]) -> list[float]:
    import torch

    from iqpfr.quality.niqe import NIQE

    scorer = NIQE()
    with torch.no_grad():
        return [float(scorer(torch.from_numpy(im.astype(np.float32) / 255.0).permute(2, 0, 1)[None])) for im in images]


def face_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    from iqpfr.eval.identity import identity_distance
    from iqpfr.tasks.color.metrics import ciede2000, colourfulness

    return {"ciede2000": ciede2000(pred, gt), "colourfulness_ratio": colourfulness(pred) / max(colourfulness(gt), 1e-6),
            "ids": identity_distance(pred, gt)["ids"]}


def mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    draw.rectangle([0, 0, pil.width, 14], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(pil)


def sheet(rows: list[list[np.ndarray]], out: Path, size: int = 128) -> None:
    """Grid of tiles (each resized to ``size`` high), written atomically."""
    from PIL import Image

    def fit(t):
        h, w = t.shape[:2]
        return np.asarray(Image.fromarray(t).resize((max(1, round(w * size / h)), size), Image.LANCZOS))

    lines = [np.hstack([fit(t) for t in r]) for r in rows]
    width = max(line.shape[1] for line in lines)
    canvas = np.full((size * len(lines), width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        canvas[i * size:(i + 1) * size, : line.shape[1]] = line
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part.png")
    Image.fromarray(canvas).save(tmp)
    tmp.replace(out)


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    import torch

    from iqpfr.restorer import FaceRestorer
    from iqpfr.tasks.color.enhancer import recolor_result
    from iqpfr.tasks.color.metrics import ciede2000, colourfulness

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--color-weights", default="iqpfr-128-color")
    p.add_argument("--baseline-weights", default="iqpfr-128")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--whole-photos", type=int, default=7, help="how many of codeformer_whole_imgs (0: skip)")
    p.add_argument("--skip-real", action="store_true", help="skip the real gray faces and their contact sheet")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    if not SHARED.is_dir():
        print(f"{SHARED}: missing (the reference data)", file=sys.stderr)
        return 1
    models = {"iqpfr-128 (w 0, q 0.95)": FaceRestorer.from_pretrained(args.baseline_weights, device="cpu"),
              "iqpfr-128-color (w 0, q 0.95)": FaceRestorer.from_pretrained(args.color_weights, device="cpu")}
    rng = np.random.default_rng(args.seed)
    gts = [load_rgb(path, SIZE) for path in images_in(SHARED / "gpen_ffhq10")]
    kinds = ("gray", "faded", "cast")
    inputs = {k: [degrade(g, k, rng) for g in gts] for k in kinds}
    results: dict = {"settings": {"faces": len(gts), "size": SIZE, "seed": args.seed,
                                  "color_weights": args.color_weights, "baseline_weights": args.baseline_weights},
                     "synthetic": {}, "real_gray": {}, "whole_photos": {}}
    gt_niqe = float(np.mean(niqe_scores(gts)))
    sheet_rows = []
    for kind in kinds:
        outputs = {"input": inputs[kind], "gray-world": [gray_world(x) for x in inputs[kind]],
                   "histogram stretch": [hist_stretch(x) for x in inputs[kind]]}
        for name, restorer in models.items():
            outputs[name] = run_model(restorer, inputs[kind])
        for name in models:
            outputs[name.split(" (")[0] + " colour map on input"] = mapped(inputs[kind], outputs[name])
        for name in models:
            outputs[name.split(" (")[0] + " transfer (default)"] = transferred(inputs[kind], outputs[name])
        table = {}
        for name, preds in outputs.items():
            rows = [face_metrics(pr, gt) for pr, gt in zip(preds, gts)]
            table[name] = {"ciede2000": mean(rows, "ciede2000"), "colourfulness_ratio": mean(rows, "colourfulness_ratio"),
                           "ids": mean(rows, "ids"), "niqe": float(np.mean(niqe_scores(preds)))}
        table["ground truth"] = {"ciede2000": 0.0, "colourfulness_ratio": 1.0, "ids": 0.0, "niqe": gt_niqe}
        results["synthetic"][kind] = table
        print(f"[{time.perf_counter() - start:.0f}s] {kind}: " + "; ".join(
            f"{n} dE {v['ciede2000']:.2f} M {v['colourfulness_ratio']:.2f} ids {v['ids']:.1f}" for n, v in table.items()))
        for i in range(2):
            sheet_rows.append([label(outputs["input"][i], f"{kind} input")]
                              + [label(outputs[n][i], n.split(" (")[0].replace("colour map on input", "map")) for n in list(outputs)[1:]]
                              + [label(gts[i], "GT")])

    # real gray faces: no GT, colourfulness only
    gray_faces = [to_gray(load_rgb(path, SIZE)) for path in images_in(SHARED / "codeformer_gray_faces")]
    if args.skip_real:
        gray_faces = gray_faces[:1]
    real = {"input": gray_faces}
    for name, restorer in models.items():
        real[name] = run_model(restorer, gray_faces)
    for name in models:
        real[name.split(" (")[0] + " colour map on input"] = mapped(gray_faces, real[name])
    for name in models:
        real[name.split(" (")[0] + " transfer (default)"] = transferred(gray_faces, real[name])
    results["real_gray"] = {n: {"colourfulness": float(np.mean([colourfulness(x) for x in ims])),
                                "niqe": float(np.mean(niqe_scores(ims)))} for n, ims in real.items()}
    results["real_gray"]["faces"] = len(gray_faces)
    for i in range(min(6, len(gray_faces))):
        sheet_rows.append([label(real["input"][i], "real gray")]
                          + [label(real[n][i], n.split(" (")[0].replace("colour map on input", "map")) for n in list(real)[1:]])
    sheet(sheet_rows, args.docs / "color_contact_sheet.png")
    print(f"[{time.perf_counter() - start:.0f}s] real gray faces: {results['real_gray']}")

    # whole photos
    from iqpfr.tasks.color.enhancer import ColorEnhancer

    whole_rows = []
    photos = images_in(SHARED / "codeformer_whole_imgs")[: args.whole_photos]
    enhancers = {name: ColorEnhancer(r) for name, r in models.items()}
    per = {}
    for path in photos:
        original = load_rgb(path)
        for kind in ("gray", "faded"):
            x = degrade(original, kind, rng)
            row = [label(x, f"{kind} {path.name}")]
            for name, enh in enhancers.items():
                result = enh.restorer.restore(x, fidelity=0.0, quality=0.95, grayscale="off", face_upsample=False)
                if kind == "gray":
                    variants = [("lsq", "affine", "keep"), ("lsq", "affine", "tone"), ("mk", "affine", "keep"),
                                ("mk", "affine", "tone")]
                else:
                    variants = [("lsq", "affine", "keep"), ("network", "none", "keep"), ("mk", "affine", "keep"),
                                ("mk", "none", "keep")]
                pasted = result.output  # faces pasted into the input photo; recolor_result replaces it
                restored = [None if f.restored is None else f.restored.copy() for f in result.faces]
                for transfer, whole, background in variants:
                    result.output = pasted
                    for f, r in zip(result.faces, restored):
                        f.restored = None if r is None else r.copy()
                    out = recolor_result(result, x, whole_photo=whole, gray_background=background,
                                         transfer=transfer).image
                    v = f"{transfer} / {background if kind == 'gray' else whole}"
                    key = f"{kind} / {name} / {v}"
                    per.setdefault(key, []).append({"ciede2000": ciede2000(out, original),
                                                    "colourfulness_ratio": colourfulness(out) / max(colourfulness(original), 1e-6),
                                                    "faces": len(result.faces)})
                    if "color" not in name and transfer in ("mk", "network"):
                        row.append(label(out, f"{transfer} {v.split(' / ')[1]}"))
            for key, fn in (("gray-world", gray_world), ("histogram stretch", hist_stretch), ("input", lambda a: a)):
                out = fn(x)
                per.setdefault(f"{kind} / {key}", []).append(
                    {"ciede2000": ciede2000(out, original), "colourfulness_ratio": colourfulness(out) / max(colourfulness(original), 1e-6)})
            row.append(label(original, "original"))
            whole_rows.append(row)
        print(f"[{time.perf_counter() - start:.0f}s] whole photo {path.name}")
    results["whole_photos"] = {k: {"ciede2000": mean(v, "ciede2000"), "colourfulness_ratio": mean(v, "colourfulness_ratio"),
                                   "photos": len(v)} for k, v in per.items()}
    if whole_rows:
        sheet(whole_rows, args.docs / "color_whole_photos.png", size=160)
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_results(results, args.out)
    return 0


def write_results(results: dict, out: Path) -> None:
    from iqpfr.utils.fs import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "color_eval.json", json.dumps(results, indent=2) + "\n")
    lines = ["# Face colour enhancement (issue 22)", "",
             f"`python3 scripts/color/evaluate.py` ({results['settings']['faces']} gpen_ffhq10 faces at "
             f"{results['settings']['size']} px, seed {results['settings']['seed']}); lower CIEDE2000 / ids / NIQE is "
             "better, colourfulness ratio 1 = the GT's.", ""]
    for kind, table in results["synthetic"].items():
        lines += [f"## {kind}", "", "| method | CIEDE2000 | colourfulness / GT | ids (deg) | NIQE |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {v['ciede2000']:.2f} | {v['colourfulness_ratio']:.2f} | {v['ids']:.1f} | {v['niqe']:.2f} |"
                  for n, v in table.items()]
        lines.append("")
    lines += ["## Real gray faces (codeformer_gray_faces, no GT)", "", "| method | colourfulness | NIQE |", "|---|---|---|"]
    lines += [f"| {n} | {v['colourfulness']:.1f} | {v['niqe']:.2f} |" for n, v in results["real_gray"].items()
              if isinstance(v, dict)]
    lines += ["", "## Whole photos (codeformer_whole_imgs vs the original photo)", "",
              "| condition / method / whole-photo step | CIEDE2000 | colourfulness / original |", "|---|---|---|"]
    lines += [f"| {k} | {v['ciede2000']:.2f} | {v['colourfulness_ratio']:.2f} |" for k, v in results["whole_photos"].items()]
    atomic_write_text(out / "color_eval.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
