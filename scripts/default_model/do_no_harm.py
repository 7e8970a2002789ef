"""Do no harm, measured: a restoration model with `iqpfr restore`'s defaults on sharp, degraded and
real low-quality faces (issue 17's "Done when" list), plus a contact sheet.

    python3 scripts/default_model/do_no_harm.py                          # the shipped default, restore defaults
    python3 scripts/default_model/do_no_harm.py --fidelity 0.5 --face-upsample off -o runs/harm_fixed
    python3 scripts/default_model/do_no_harm.py --weights FILE.safetensors -o runs/harm_x

Every face goes through ``FaceRestorer.restore(face, aligned=True)`` with the given settings (default:
``--fidelity auto`` and the model's default face up-sampling, i.e. exactly ``iqpfr restore --aligned``)
and comes back at the input's 512 px.

* **sharp**: ``gpen_ffhq10`` resized to 512 px (area), restored as they are: identity distance of
  output to input by dlib (``ids_l2``) and by a second network (MobileFaceNet-style ONNX,
  ``iqpfr.eval.mobileface``, cosine distance), PSNR output vs input, NIQE of both.
* **degraded**: the acceptance protocol ("large" preset at 512 px, seeds 0-3 via ``make_testset``)
  against bicubic (LQ -> network size -> 512): identity to the GT by both networks, NIQE, dlib
  detection rate.
* **real LQ**: ``codeformer_cropped_faces`` (with the Solvay 1927 faces) and ``codeformer_gray_faces``:
  NIQE and PIQE of input and output, identity drift (both networks, output vs input; a figure,
  not a gate: the input's own embedding is unreliable on very blurry faces).

Outputs are resumed from OUT (``run.json`` names model and settings; another run's OUT is refused).
Writes ``OUT/harm.json``, ``OUT/harm.md`` and the contact sheet (``--sheet``), prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dm_common as dm  # noqa: E402

SEEDS = (0, 1, 2, 3)
SIDE = 512
REAL_SETS = ("codeformer_cropped_faces", "codeformer_gray_faces")


def faces_in(folder: Path, limit: int) -> list[Path]:
    from iqpfr.io import image_files

    files = image_files(folder)
    return files[:limit] if limit else files


def to_side(image: np.ndarray, side: int = SIDE) -> np.ndarray:
    import cv2

    if image.shape[:2] == (side, side):
        return image
    shrink = image.shape[0] > side
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


class Judge:
    """Identity (dlib and the second network), PSNR, NIQE, PIQE and detection of uint8 RGB faces."""

    def __init__(self, offline: bool):
        from iqpfr.eval.mobileface import MobileFaceEmbedder
        from iqpfr.quality.niqe import NIQE
        from iqpfr.quality.piqe import PIQE

        self.mobile = MobileFaceEmbedder(offline=offline)
        self.niqe_net, self.piqe_net = NIQE(), PIQE()

    def identity(self, image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """Distances of ``image`` to ``reference``; landmarks and box come from the reference."""
        from iqpfr.eval import dlib_models
        from iqpfr.eval.identity import identity_distance

        box, _ = dlib_models.face_box(reference)
        points = dlib_models.landmarks(reference, box)
        mobile = self.mobile.distance(self.mobile.embed(image, points), self.mobile.embed(reference, points))
        return {"dlib": identity_distance(image, reference)["ids_l2"], "mobile": mobile}

    def _score(self, net, image: np.ndarray) -> float:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            return float(net(x)[0])

    def niqe(self, image: np.ndarray) -> float:
        return self._score(self.niqe_net, image)

    def piqe(self, image: np.ndarray) -> float:
        return self._score(self.piqe_net, image)

    @staticmethod
    def detected(image: np.ndarray) -> bool:
        from iqpfr.eval import dlib_models

        return bool(dlib_models.face_box(image)[1])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def restored(restorer, options: dict, image: np.ndarray, cache: Path) -> tuple[np.ndarray, dict]:
    """The restored 512-px face (from ``cache`` when present) and its per-face record."""
    from iqpfr.io import read_rgb, write_rgb

    meta_path = cache.with_suffix(".json")
    if cache.is_file() and meta_path.is_file():
        return read_rgb(cache), json.loads(meta_path.read_text())
    result = restorer.restore(image, aligned=True, **options)
    face = result.faces[0].to_dict() if result.faces else {}
    record = {k: face[k] for k in ("fidelity", "input_niqe", "strength", "generative") if k in face}
    record["seconds"] = round(sum(result.timings.values()), 3)
    write_rgb(cache, result.image)
    dm.write_json(meta_path, record)
    return result.image, record


def bicubic(lq: np.ndarray, side: int) -> np.ndarray:
    import cv2

    small = cv2.resize(lq, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (lq.shape[1], lq.shape[0]), interpolation=cv2.INTER_CUBIC)


def mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def contact_sheet(groups: list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]], path: Path, thumb: int = 128,
                  per_row: int = 6) -> Path:
    """Input | output pairs, ``per_row`` pairs a row, one titled block per group (finalize.py's grid); PNG."""
    from contact_sheet import grid, header

    from iqpfr.io import write_rgb

    blocks = []
    for title, pairs in groups:
        block = grid([list(pair) for pair in pairs], per_row, thumb, ["input", "output"])
        if block.shape[1] < per_row * 2 * thumb:  # fewer pairs than a row: pad to the sheet's width
            block = np.pad(block, ((0, 0), (0, per_row * 2 * thumb - block.shape[1]), (0, 0)), constant_values=255)
        blocks += [header(title, block.shape[1]), block]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rgb(path, np.concatenate(blocks, 0), overwrite=True)  # a re-run replaces its own sheet
    return path


def impostor_distances(judge: Judge, faces: list[np.ndarray]) -> dict[str, float]:
    """Identity distances between different people (every pair of ``faces``): the scale a gate is read on."""
    pairs = [judge.identity(faces[i], faces[j]) for i in range(len(faces)) for j in range(i + 1, len(faces))]
    if not pairs:
        return {}
    return {f"{net}_{stat}": float(fn([p[net] for p in pairs]))
            for net in ("dlib", "mobile") for stat, fn in (("min", np.min), ("mean", np.mean))}


def niqe_range(rows: list[dict]) -> list[float]:
    values = [r["input_niqe"] for r in rows if "input_niqe" in r]
    return [round(min(values), 2), round(max(values), 2)] if values else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="default: the embedded default model")
    ap.add_argument("-o", "--out", type=Path, default=dm.REPO / "runs" / "do_no_harm")
    ap.add_argument("--data", type=Path, default=dm.SHARED_DATA)
    ap.add_argument("--fidelity", default="auto", help="auto (default) or a fixed w")
    ap.add_argument("--face-upsample", choices=("default", "on", "off"), default="default")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--limit", type=int, default=0, help="first N faces of each set (tests)")
    ap.add_argument("--sheet", type=Path, default=None, help="contact sheet PNG (default OUT/contact_sheet.png)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--offline", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from iqpfr.eval.sweep import claim_output_folder, model_fingerprint
    from iqpfr.eval.testset import make_testset
    from iqpfr.io import read_rgb
    from iqpfr.restorer import FaceRestorer

    torch.set_num_threads(args.threads)
    fidelity = args.fidelity if args.fidelity == "auto" else float(args.fidelity)
    face_upsample = {"default": None, "on": True, "off": False}[args.face_upsample]
    restorer = FaceRestorer.from_pretrained(args.weights, device="cpu", offline=args.offline)
    face_upsample = restorer.default_face_upsample() if face_upsample is None else face_upsample
    options = {"fidelity": fidelity, "face_upsample": face_upsample}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out: Path = args.out
    try:
        claim_output_folder(out, {"model": model_fingerprint(restorer.model), "options": options,
                                  "data": args.data.resolve(), "limit": args.limit})
    except ValueError as exc:
        raise SystemExit(f"do_no_harm: {exc}") from None
    judge = Judge(args.offline)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    report: dict = {"model": restorer.description, "options": options, "sets": {}}
    sheet: list = []

    # --- sharp inputs, restored as they are
    rows, pairs, inputs = [], [], []
    for path in faces_in(args.data / "gpen_ffhq10", args.limit):
        face = to_side(read_rgb(path))
        inputs.append(face)
        out_face, record = restored(restorer, options, face, out / "sharp" / f"{path.stem}.png")
        ids = judge.identity(out_face, face)
        rows.append({"face": path.name, "dlib": ids["dlib"], "mobile": ids["mobile"], "psnr": psnr(out_face, face),
                     "niqe_in": judge.niqe(face), "niqe_out": judge.niqe(out_face), **record})
        pairs.append((face, out_face))
    log(f"sharp: {len(rows)} faces")
    sharp = {"faces": rows, "dlib_mean": mean(rows, "dlib"), "dlib_worst": max(r["dlib"] for r in rows),
             "mobile_mean": mean(rows, "mobile"), "mobile_worst": max(r["mobile"] for r in rows),
             "psnr_mean": float(np.mean([min(r["psnr"], 99.0) for r in rows])),
             "psnr_min": min(r["psnr"] for r in rows),
             "niqe_in": mean(rows, "niqe_in"), "niqe_out": mean(rows, "niqe_out"),
             "input_niqe_range": niqe_range(rows), "impostors": impostor_distances(judge, inputs)}
    report["sets"]["sharp"] = sharp
    sheet.append(("sharp gpen_ffhq10 (512 px)", pairs))

    # --- degraded: the acceptance protocol, against bicubic through the network's size
    hq = faces_in(args.data / "gpen_ffhq10", args.limit)
    degraded = {}
    for seed in seeds:
        testset = out / f"degraded_s{seed}" / "testset"
        make_testset(hq, testset, protocol="large", seed=seed, size=SIDE, progress=False, log=lambda m: None)
        rows, pairs = [], []
        for lq_path in sorted((testset / "lq").glob("*.png")):
            lq, gt = read_rgb(lq_path), read_rgb(testset / "gt" / lq_path.name)
            out_face, record = restored(restorer, options, lq, out / f"degraded_s{seed}" / "restored" / lq_path.name)
            base = bicubic(lq, restorer.face_size)
            ids, ids_base = judge.identity(out_face, gt), judge.identity(base, gt)
            rows.append({"face": lq_path.name, "dlib": ids["dlib"], "mobile": ids["mobile"],
                         "dlib_bicubic": ids_base["dlib"], "mobile_bicubic": ids_base["mobile"],
                         "niqe": judge.niqe(out_face), "niqe_bicubic": judge.niqe(base),
                         "detected": float(judge.detected(out_face)), "detected_bicubic": float(judge.detected(base)),
                         **record})
            if seed == seeds[0]:
                pairs.append((lq, out_face))
        degraded[str(seed)] = {key: mean(rows, key) for key in (
            "dlib", "dlib_bicubic", "mobile", "mobile_bicubic", "niqe", "niqe_bicubic", "detected", "detected_bicubic")}
        degraded[str(seed)]["faces"] = rows
        degraded[str(seed)]["input_niqe_range"] = niqe_range(rows)
        log(f"degraded seed {seed}: {len(rows)} faces, dlib {degraded[str(seed)]['dlib']:.3f} "
            f"(bicubic {degraded[str(seed)]['dlib_bicubic']:.3f}), NIQE {degraded[str(seed)]['niqe']:.2f}")
        if seed == seeds[0]:
            sheet.append((f"degraded 'large' seed {seed}", pairs))
    report["sets"]["degraded"] = degraded

    # --- real low-quality faces
    real = {}
    for name in REAL_SETS:
        rows, pairs = [], []
        for path in faces_in(args.data / name, args.limit):
            face = to_side(read_rgb(path))
            out_face, record = restored(restorer, options, face, out / name / f"{path.stem}.png")
            ids = judge.identity(out_face, face)
            rows.append({"face": path.name, "niqe_in": judge.niqe(face), "niqe_out": judge.niqe(out_face),
                         "piqe_in": judge.piqe(face), "piqe_out": judge.piqe(out_face),
                         "drift_dlib": ids["dlib"], "drift_mobile": ids["mobile"], **record})
            pairs.append((face, out_face))
        real[name] = {key: mean(rows, key) for key in (
            "niqe_in", "niqe_out", "piqe_in", "piqe_out", "drift_dlib", "drift_mobile")}
        real[name]["faces"] = rows
        real[name]["input_niqe_range"] = niqe_range(rows)
        log(f"{name}: {len(rows)} faces, NIQE {real[name]['niqe_in']:.2f} -> {real[name]['niqe_out']:.2f}, "
            f"PIQE {real[name]['piqe_in']:.1f} -> {real[name]['piqe_out']:.1f}")
        sheet.append((name, pairs))
    report["sets"]["real"] = real

    checks = [
        ("sharp: mean dlib distance to the input", sharp["dlib_mean"], "<= 0.30", sharp["dlib_mean"] <= 0.30),
        ("sharp: worst dlib distance to the input", sharp["dlib_worst"], "<= 0.45", sharp["dlib_worst"] <= 0.45),
        ("sharp: mean second-network distance to the input", sharp["mobile_mean"],
         f"<= 0.30 (different people here: >= {sharp['impostors'].get('mobile_min', float('nan')):.2f})",
         sharp["mobile_mean"] <= 0.30),
        ("sharp: PSNR vs input (dB, lowest face)", sharp["psnr_min"], ">= 27", sharp["psnr_min"] >= 27),
        ("sharp: NIQE out vs in", sharp["niqe_out"], f"<= {sharp['niqe_in']:.2f} + 1",
         sharp["niqe_out"] <= sharp["niqe_in"] + 1),
    ]
    for seed, d in degraded.items():
        checks += [
            (f"degraded s{seed}: dlib to GT (bicubic {d['dlib_bicubic']:.3f})", d["dlib"], "<= bicubic",
             d["dlib"] <= d["dlib_bicubic"]),
            (f"degraded s{seed}: second network to GT (bicubic {d['mobile_bicubic']:.3f})", d["mobile"], "<= bicubic",
             d["mobile"] <= d["mobile_bicubic"]),
            (f"degraded s{seed}: NIQE (bicubic {d['niqe_bicubic']:.2f})", d["niqe"], "<= 7.5", d["niqe"] <= 7.5),
            (f"degraded s{seed}: detection rate (bicubic {d['detected_bicubic']:.2f})", d["detected"], ">= bicubic",
             d["detected"] >= d["detected_bicubic"]),
        ]
    for name, r in real.items():
        checks += [
            (f"{name}: NIQE (input {r['niqe_in']:.2f})", r["niqe_out"], "< 7", r["niqe_out"] < 7),
            (f"{name}: PIQE (input {r['piqe_in']:.1f})", r["piqe_out"], "< 70", r["piqe_out"] < 70),
        ]
    report["checks"] = [{"check": c, "value": v, "criterion": k, "pass": bool(p)} for c, v, k, p in checks]
    report["all_pass"] = all(p for *_, p in checks)
    lines = [f"Model {restorer.description}; restore options {options}.", "",
             "| check | value | criterion | pass |", "|---|---|---|---|"]
    lines += [f"| {c} | {v:.3f} | {k} | {'yes' if p else 'NO'} |" for c, v, k, p in checks]
    drift = "; ".join(f"{n}: dlib {r['drift_dlib']:.3f}, second network {r['drift_mobile']:.3f}" for n, r in real.items())
    lines += ["", f"Identity drift on real LQ (output vs input, a figure, not a gate): {drift}."]
    ranges = {"sharp": sharp["input_niqe_range"], **{f"degraded s{k}": d["input_niqe_range"] for k, d in degraded.items()},
              **{n: r["input_niqe_range"] for n, r in real.items()}}
    lines += ["", "Input NIQE (512 px, what -w auto reads) per set: "
              + "; ".join(f"{n} {lo}-{hi}" for n, (lo, hi) in ((n, r) for n, r in ranges.items() if r)) + "."]
    imp = sharp["impostors"]
    if imp:
        lines += [f"Different people among the sharp inputs: dlib {imp['dlib_min']:.3f} (min) / {imp['dlib_mean']:.3f} "
                  f"(mean), second network {imp['mobile_min']:.3f} / {imp['mobile_mean']:.3f}."]
    md = "\n".join(lines) + "\n"
    dm.write_json(out / "harm.json", report)
    from iqpfr.utils.fs import atomic_write_text

    atomic_write_text(out / "harm.md", md)
    sheet_path = contact_sheet(sheet, args.sheet or out / "contact_sheet.png")
    print(md)
    print(f"contact sheet: {sheet_path}")
    print(json.dumps({"all_pass": report["all_pass"]}))
    return 0 if report["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
