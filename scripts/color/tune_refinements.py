"""Refinements of the colour transfer tried against colour casts, on TRAINING faces (issue 22).

    python3 scripts/color/tune_refinements.py [--passes 3]

The same 40 ``ffhq_train256`` faces, degradations (seed 1) and cached network outputs as
``scripts/color/tune_transfer.py`` (run that first, or this builds its cache). For faded and cast
faces, against the GT: CIEDE2000, colourfulness ratio and the dlib identity angle of

* the default (Monge-Kantorovich map in CIELab from the input face to ``iqpfr-128``'s face, w 0, q 0.95);
* **refinement passes**: the network is run again on the recoloured face and the map is refitted
  from the *original* input to the new reference (a fixed-point search for the colour the prior no
  longer changes);
* **shrunk maps**: ``M' = I + a (M - I)``, the offset chosen so the face's mapped mean is kept (the
  spread change is trusted less than the mean, since the reference is a re-synthesised face);
* the map on a/b only (L by mean/std), and the diagonal sRGB map;
* **chosen by the prior**: per face, whichever of MK Lab, diagonal Lab, diagonal sRGB and MK shrunk
  a=0.5 the network would change least (CIEDE2000 between a candidate and its MK map to the
  network's face of that candidate), with the per-face best ("oracle") as the bound.

Writes benchmarks/results/color_refine.json / .md. CPU: a few minutes.
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
import evaluate as ev  # noqa: E402
import tune_transfer as tt  # noqa: E402


def shrink(transfer, face: np.ndarray, mask: np.ndarray, amount: float):
    """``transfer`` (a CIELab ColorTransfer) with its matrix moved toward the identity by ``1 - amount``,
    keeping where it sends the face's (mask-weighted) mean colour."""
    from iqpfr.tasks.color.transfer import ColorTransfer, srgb_to_lab

    w = mask.reshape(-1) / mask.sum()
    mean = w @ srgb_to_lab(face.reshape(-1, 3))
    target = transfer.matrix @ mean + transfer.offset
    matrix = np.eye(3) + amount * (transfer.matrix - np.eye(3))
    return ColorTransfer(matrix, target - matrix @ mean, "lab")


def chroma_only(face: np.ndarray, ref: np.ndarray, mask: np.ndarray):
    """MK map on (a, b) only, L by its mean and standard deviation (no L-chroma cross terms)."""
    from iqpfr.tasks.color.transfer import ColorTransfer, _sqrtm, srgb_to_lab

    w = mask.reshape(-1) / mask.sum()
    x, y = srgb_to_lab(face.reshape(-1, 3)), srgb_to_lab(ref.reshape(-1, 3))
    mx, my = w @ x, w @ y
    dx, dy = x - mx, y - my
    cx, cy = (dx[:, 1:] * w[:, None]).T @ dx[:, 1:], (dy[:, 1:] * w[:, None]).T @ dy[:, 1:]
    half = _sqrtm(cx + 1e-6 * np.trace(cx) * np.eye(2))
    inv_half = np.linalg.inv(half)
    ab = inv_half @ _sqrtm(half @ cy @ half) @ inv_half
    gain_l = np.sqrt((w @ dy[:, 0] ** 2) / max(w @ dx[:, 0] ** 2, 1e-12))
    matrix = np.zeros((3, 3))
    matrix[0, 0], matrix[1:, 1:] = gain_l, ab
    return ColorTransfer(matrix, my - matrix @ mx, "lab")


def main(argv: list[str] | None = None) -> int:
    import torch

    from iqpfr.face.paste import soft_face_mask
    from iqpfr.restorer import FaceRestorer
    from iqpfr.tasks.color.metrics import ciede2000, colourfulness
    from iqpfr.tasks.color.transfer import fit_transfer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--passes", type=int, default=3, help="refinement passes after the first fit")
    p.add_argument("--faces", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ev.ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    cache_path = Path(os.environ.get("IQPFR_HOME", Path.home() / ".cache" / "iqpfr")) / "color_tune_cache.npz"
    data = dict(np.load(cache_path)) if cache_path.is_file() else tt.build_cache(cache_path, args.faces, args.seed)
    gts = list(data["gt"])
    mask = soft_face_mask(ev.SIZE)
    restorer = FaceRestorer.from_pretrained("iqpfr-128", device="cpu")

    def row(preds: list[np.ndarray]) -> dict:
        return {"ciede2000": float(np.mean([ciede2000(a, g) for a, g in zip(preds, gts)])),
                "colourfulness_ratio": float(np.mean([colourfulness(a) / colourfulness(g) for a, g in zip(preds, gts)])),
                "ids": tt.identity(preds, gts)}

    def mapped(xs, refs, fit) -> list[np.ndarray]:
        return [tt.u8(fit(x / 255.0, r / 255.0).apply(x / 255.0)) for x, r in zip(xs, refs)]

    mk = lambda x, r: fit_transfer(x, r, mask, method="mk", space="lab", blur=0.0)  # noqa: E731
    results: dict = {"settings": {"faces": len(gts), "seed": args.seed, "passes": args.passes}}
    for kind in ("faded", "cast"):
        xs, refs = list(data[f"in/{kind}"]), list(data[f"net/iqpfr-128/{kind}/raw"])
        table = {"input": row(xs), "histogram stretch": row([ev.hist_stretch(x) for x in xs]),
                 "MK Lab (default)": row(mapped(xs, refs, mk))}
        for amount in (0.75, 0.5):
            table[f"MK Lab shrunk a={amount}"] = row(mapped(xs, refs, lambda x, r, a=amount: shrink(mk(x, r), x, mask, a)))
        table["MK on a/b, L mean/std"] = row(mapped(xs, refs, lambda x, r: chroma_only(x, r, mask)))
        table["diagonal sRGB"] = row(mapped(xs, refs, lambda x, r: fit_transfer(x, r, mask, method="diagonal",
                                                                                 space="srgb", blur=0.0)))
        candidates = {"mk": mapped(xs, refs, mk),
                      "diagonal Lab": mapped(xs, refs, lambda x, r: fit_transfer(x, r, mask, method="diagonal",
                                                                                  space="lab", blur=0.0)),
                      "diagonal sRGB": mapped(xs, refs, lambda x, r: fit_transfer(x, r, mask, method="diagonal",
                                                                                   space="srgb", blur=0.0)),
                      "shrunk 0.5": mapped(xs, refs, lambda x, r: shrink(mk(x, r), x, mask, 0.5))}
        change = {k: [ciede2000(tt.u8(mk(c / 255.0, a / 255.0).apply(c / 255.0)), c)
                      for c, a in zip(v, ev.run_model(restorer, v))] for k, v in candidates.items()}
        errors = {k: [ciede2000(c, g) for c, g in zip(v, gts)] for k, v in candidates.items()}
        picks = [min(candidates, key=lambda k, i=i: change[k][i]) for i in range(len(xs))]
        table["chosen by the prior (least change)"] = row([candidates[k][i] for i, k in enumerate(picks)])
        table["chosen by the prior (least change)"]["picks"] = {k: picks.count(k) for k in candidates}
        table["per-face best of the four (oracle, uses the GT)"] = row(
            [candidates[min(candidates, key=lambda k, i=i: errors[k][i])][i] for i in range(len(xs))])
        current = candidates["mk"]
        for n in range(1, args.passes + 1):
            current = mapped(xs, ev.run_model(restorer, current), mk)
            table[f"MK Lab + {n} refinement pass{'es' if n > 1 else ''}"] = row(current)
        results[kind] = table
        print(f"[{time.perf_counter() - start:.0f}s] {kind}: " + "; ".join(
            f"{k}: {v['ciede2000']:.2f}/{v['ids']:.2f}" for k, v in table.items()), flush=True)
    write(results, args.out)
    return 0


def write(results: dict, out: Path) -> None:
    from iqpfr.utils.fs import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "color_refine.json", json.dumps(results, indent=2) + "\n")
    s = results["settings"]
    lines = ["# Colour transfer refinements against casts (issue 22)", "",
             f"`python3 scripts/color/tune_refinements.py` ({s['faces']} training faces of ffhq_train256, 128 px, "
             f"seed {s['seed']}; NOT the evaluation faces). CIEDE2000 and identity angle: lower is better; "
             "colourfulness / GT: 1 is right.", ""]
    for kind in ("faded", "cast"):
        lines += [f"## {kind}", "", "| variant | CIEDE2000 | colourfulness / GT | identity (deg) |", "|---|---|---|---|"]
        for k, v in results[kind].items():
            picks = f" (picks: {', '.join(f'{n} {c}' for n, c in v['picks'].items())})" if "picks" in v else ""
            lines.append(f"| {k}{picks} | {v['ciede2000']:.2f} | {v['colourfulness_ratio']:.2f} | {v['ids']:.2f} |")
        lines.append("")
    atomic_write_text(out / "color_refine.md", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
