"""Choose the colour-transfer settings of the colour task on TRAINING faces, not the evaluation faces.

    python3 scripts/color/tune_transfer.py [--faces 40] [--seed 1] [--ids]

The last ``--faces`` faces of ``../shared/data/ffhq_train256`` (FFHQ ids up to 01100; the evaluation
faces are gpen_ffhq10 = FFHQ 00000-00009) at 128 px are made gray / faded / cast as in
``scripts/color/evaluate.py`` but with another seed (default 1). The networks (``iqpfr-128``,
``iqpfr-128-color``, w 0, q 0.95) see the degraded face ("raw"), its gray version ("gray") or its
histogram-stretched version ("stretch"); their outputs are the colour reference, and each variant of
the transfer (``iqpfr.tasks.color.transfer``: moment matching, diagonal or Monge-Kantorovich, in
Lab / linear RGB / sRGB, statistics on blurred images, face mask; for gray inputs the reference's
a/b times a chroma factor on the input's L) maps the input to it. Mean CIEDE2000 and colourfulness
ratio vs the GT per variant (``--ids``: also the dlib identity angle for a few) ->
benchmarks/results/color_tune.json / .md (network outputs cached in
$IQPFR_HOME/color_tune_cache.npz).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as ev  # noqa: E402  (the same degradations, baselines and model call)

MODELS = ("iqpfr-128", "iqpfr-128-color")
FEEDS = ("raw", "gray", "stretch")


def feed_input(x: np.ndarray, feed: str) -> np.ndarray:
    return {"raw": lambda: x, "gray": lambda: ev.to_gray(x), "stretch": lambda: ev.hist_stretch(x)}[feed]()


def build_cache(path: Path, faces: int, seed: int) -> dict:
    import torch

    from iqpfr.restorer import FaceRestorer

    torch.set_num_threads(1)
    paths = ev.images_in(ev.SHARED / "ffhq_train256")[-faces:]
    gts = [ev.load_rgb(p, ev.SIZE) for p in paths]
    rng = np.random.default_rng(seed)
    out = {"gt": np.stack(gts), "names": np.array([p.name for p in paths])}
    inputs = {k: [ev.degrade(g, k, rng) for g in gts] for k in ("gray", "faded", "cast")}
    for k, xs in inputs.items():
        out[f"in/{k}"] = np.stack(xs)
    for name in MODELS:
        restorer = FaceRestorer.from_pretrained(name, device="cpu")
        for k, xs in inputs.items():
            for feed in FEEDS if k != "gray" else ("raw",):
                out[f"net/{name}/{k}/{feed}"] = np.stack(ev.run_model(restorer, [feed_input(x, feed) for x in xs]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, **out)
    tmp.replace(path)
    return out


def u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x) * 255.0), 0, 255).astype(np.uint8)


def apply_variant(x: np.ndarray, ref: np.ndarray, mask: np.ndarray, v: dict) -> np.ndarray:
    """One input face (uint8) recoloured toward its reference (uint8) by variant ``v`` -> uint8."""
    from iqpfr.tasks.color.transfer import chroma_from_reference, fit_transfer
    from iqpfr.tasks.color.transform import apply_color_transform, fit_color_transform

    xf, rf = x.astype(np.float32) / 255.0, ref.astype(np.float32) / 255.0
    if v["method"] == "network":
        return ref
    if v["method"] == "lsq":
        return u8(apply_color_transform(xf, fit_color_transform(xf, rf, mask, reg=1e-2)))
    if v["method"] == "chroma":
        return u8(chroma_from_reference(xf, rf, chroma=v["chroma"], blur=v["blur"]))
    t = fit_transfer(xf, rf, mask, method=v["method"], space=v["space"], blur=v["blur"])
    return u8(t.apply(xf))


def variants(kind: str) -> list[dict]:
    out = [{"method": "network"}, {"method": "lsq"}]
    if kind == "gray":
        out += [{"method": "chroma", "chroma": c, "blur": b} for c in (0.4, 0.6, 0.8, 1.0) for b in (0.0, 2.0)]
        out += [{"method": m, "space": "lab", "blur": 1.0} for m in ("diagonal",)]
        return out
    out += [{"method": m, "space": s, "blur": b} for m in ("diagonal", "mk") for s in ("lab", "linrgb", "srgb")
            for b in (0.0, 1.5)]
    return out


IDS_VARIANTS = ({"method": "mk", "space": "lab", "blur": 0.0}, {"method": "diagonal", "space": "lab", "blur": 0.0},
                {"method": "diagonal", "space": "srgb", "blur": 0.0}, {"method": "chroma", "chroma": 0.8, "blur": 2.0})


def vname(v: dict) -> str:
    return " ".join(f"{k}={v[k]}" for k in v)


def identity(preds: list[np.ndarray], gts: list[np.ndarray]) -> float:
    from iqpfr.eval.identity import identity_distance

    return float(np.mean([identity_distance(pr, g)["ids"] for pr, g in zip(preds, gts)]))


def main(argv: list[str] | None = None) -> int:
    from iqpfr.face.paste import soft_face_mask
    from iqpfr.tasks.color.metrics import ciede2000, colourfulness

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ev.ROOT / "benchmarks" / "results")
    p.add_argument("--ids", action="store_true",
                   help="also the dlib identity angle to the GT for the baselines and the IDS_VARIANTS (iqpfr-128, raw feed)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    cache_path = Path(os.environ.get("IQPFR_HOME", Path.home() / ".cache" / "iqpfr")) / "color_tune_cache.npz"
    data = dict(np.load(cache_path)) if cache_path.is_file() else build_cache(cache_path, args.faces, args.seed)
    gts = list(data["gt"])
    mask = soft_face_mask(ev.SIZE)
    gt_m = [colourfulness(g) for g in gts]
    results: dict = {"settings": {"faces": len(gts), "seed": args.seed, "source": "ffhq_train256 (last faces)", "ids": args.ids}}
    for kind in ("gray", "faded", "cast"):
        xs = list(data[f"in/{kind}"])
        table = {}
        for base, fn in (("input", lambda a: a), ("gray-world", ev.gray_world), ("histogram stretch", ev.hist_stretch)):
            preds = [fn(x) for x in xs]
            table[base] = {"ciede2000": float(np.mean([ciede2000(pr, g) for pr, g in zip(preds, gts)])),
                           "colourfulness_ratio": float(np.mean([colourfulness(pr) / m for pr, m in zip(preds, gt_m)]))}
            if args.ids:
                table[base]["ids"] = identity(preds, gts)
        for model in MODELS:
            for feed in FEEDS if kind != "gray" else ("raw",):
                refs = list(data[f"net/{model}/{kind}/{feed}"])
                for v in variants(kind):
                    preds = [apply_variant(x, r, mask, v) for x, r in zip(xs, refs)]
                    row = table[f"{model} feed={feed} {vname(v)}"] = {
                        "ciede2000": float(np.mean([ciede2000(pr, g) for pr, g in zip(preds, gts)])),
                        "colourfulness_ratio": float(np.mean([colourfulness(pr) / m for pr, m in zip(preds, gt_m)]))}
                    if args.ids and model == "iqpfr-128" and feed == "raw" and v in IDS_VARIANTS:
                        row["ids"] = identity(preds, gts)
        results[kind] = table
        best = sorted(table.items(), key=lambda kv: kv[1]["ciede2000"])[:8]
        print(f"[{time.perf_counter() - start:.0f}s] {kind}: " + "; ".join(
            f"{n}: {t['ciede2000']:.2f}/{t['colourfulness_ratio']:.2f}" for n, t in best), flush=True)
    write(results, args.out)
    return 0


def write(results: dict, out: Path) -> None:
    from iqpfr.utils.fs import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "color_tune.json", json.dumps(results, indent=2) + "\n")
    s = results["settings"]
    lines = ["# Colour transfer: settings chosen on training faces (issue 22)", "",
             f"`python3 scripts/color/tune_transfer.py` ({s['faces']} faces of {s['source']}, 128 px, seed {s['seed']}; "
             "NOT the evaluation faces). Mean CIEDE2000 vs the GT (lower is better) and colourfulness / GT.", ""]
    for kind in ("gray", "faded", "cast"):
        lines += [f"## {kind}", "", "| variant | CIEDE2000 | colourfulness / GT | identity (deg, --ids) |", "|---|---|---|---|"]
        for n, t in sorted(results[kind].items(), key=lambda kv: kv[1]["ciede2000"]):
            ids = f"{t['ids']:.1f}" if "ids" in t else ""
            lines.append(f"| {n} | {t['ciede2000']:.2f} | {t['colourfulness_ratio']:.2f} | {ids} |")
        lines.append("")
    atomic_write_text(out / "color_tune.md", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
