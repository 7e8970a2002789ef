"""Quick diagnosis of issue 8's two quality checks, on the 10 validation faces (CPU, ~1-2 min each).

    python3 scripts/default_model/quality_probe.py sweep                       # the shipped model
    python3 scripts/default_model/quality_probe.py sweep runs/x/stage2/checkpoints/step_00000410.pt
    python3 scripts/default_model/quality_probe.py ceiling runs/refit/stage1/model_ema.safetensors

``sweep WEIGHTS [--adain on|off]``: mean face-iqa of the restored faces for quality targets 0.1 ... 0.9
at w = 0 and w = 0.5 (Spearman against the target), and at q = 0.9 with the HQ+ branch off (alpha 0)
and on; and how far apart the quality-embedding rows are (rows still at their N(0, 1) start: rms ~1,
pairwise ~1.4). AdaIN before decoding hides both while the rows are untrained (MODEL_CARD.md). The
faces are ``gpen_ffhq10`` degraded with the "large" preset, seed 0 (as ``acceptance.py``), resized
to the network's input; outputs are up-sampled bicubically to 512 px before scoring, as the acceptance
outputs are. WEIGHTS: a self-describing ``.safetensors`` or a training checkpoint ``.pt`` (its EMA
network, built like the shipped model).

``ceiling VQGAN``: what the codebook and decoder can express at all. For sharpness levels (as
``score_variants.py``: blur < 0 < unsharp mask) of the *ground-truth* validation faces, the face-iqa
of the image itself and of its stage-I codes decoded (both codebooks; common codebook only). A
perfect code predictor conditioned on quality could move its outputs' scores only within the
decoded range; if decoding common-only codes scores lower, the HQ+ branch has something to add.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dm_common as dm  # noqa: E402
from acceptance import TARGETS, spearman  # noqa: E402

LEVELS = (-1.2, -0.6, -0.45, 0.0, 0.4, 0.8, 1.5)


def load_restorer(weights: Path | None, adain: bool | None = None):
    """The network of ``weights`` (None: the shipped default), float32, eval mode; ``adain`` None
    keeps the file's setting."""
    from iqpfr.restorer import embedded_weights_path
    from iqpfr.weights.checkpoint import load_model

    overrides = {} if adain is None else {"adain": adain}
    if weights is None or weights.suffix == ".safetensors":
        return load_model(weights or embedded_weights_path(), **overrides).float().eval()
    from iqpfr.train.networks import read_weights

    model = load_model(embedded_weights_path(), **overrides).float()
    model.load_state_dict({k: v.float() for k, v in read_weights(weights).items()}, strict=True)
    return model.eval()


def face_iqa_mean(scorer, images01) -> float:
    """Mean face-iqa of (B, 3, s, s) images in [0, 1], scored at 512 px (bicubic)."""
    import torch.nn.functional as F

    big = F.interpolate(images01, size=512, mode="bicubic", align_corners=False).clamp(0, 1)
    return float(scorer(big).mean())


def read_batch(paths, side: int):
    """(B, 3, side, side) float in [0, 1] of RGB files, area-resized."""
    import cv2
    import numpy as np
    import torch

    from iqpfr.io import read_rgb

    arrays = []
    for p in paths:
        img = read_rgb(p)
        arrays.append(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if img.shape[0] > side else cv2.INTER_CUBIC))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def sweep(args) -> dict:
    import torch

    from iqpfr.eval.testset import make_testset
    from iqpfr.io import list_images
    from iqpfr.quality.registry import create_scorer
    from iqpfr.restorer import model_input_size

    model = load_restorer(args.weights, {"file": None, "on": True, "off": False}[args.adain])
    scorer = create_scorer("face-iqa").eval()
    testset = args.work / "testset"
    hq = [p for p, _ in list_images([args.val])]
    make_testset(hq, testset, protocol="large", seed=0, size=512, progress=False, log=lambda m: None)
    lq = read_batch(sorted((testset / "lq").glob("*.png")), model_input_size(model)) * 2 - 1
    result: dict = {"weights": str(args.weights or "shipped"), "adain": model.adain, "sweep": {}}
    print(f"AdaIN {'on' if model.adain else 'off'}")
    rows = model.quality_embed.weight.detach().float()
    top = int(model.quality_embed.bucket(torch.tensor([0.9]))[0])
    spread = {
        "row_rms": rows.pow(2).mean().sqrt().item(),
        "rms_from_top_row": [round(v, 4) for v in (rows - rows[top]).pow(2).mean(1).sqrt().tolist()],
        "mean_pairwise_rms": (torch.cdist(rows, rows).sum() / (len(rows) * (len(rows) - 1)) / rows.shape[1] ** 0.5).item(),
    }
    result["quality_rows"] = spread
    print(f"quality rows: rms {spread['row_rms']:.3f}, mean pairwise rms distance {spread['mean_pairwise_rms']:.3f}, "
          f"rms distance from the q=0.9 row {' '.join(f'{v:.3f}' for v in spread['rms_from_top_row'])}")
    with torch.no_grad():
        for w in (0.0, 0.5):
            scores = [face_iqa_mean(scorer, (model(lq, w=w, quality=q).image.clamp(-1, 1) + 1) / 2) for q in TARGETS]
            rho = spearman(TARGETS, scores)
            result["sweep"][f"w{w:g}"] = {"scores": scores, "spearman": rho}
            print(f"w={w:g}: face-iqa at q=0.1..0.9: {' '.join(f'{s:.3f}' for s in scores)}  Spearman {rho:+.2f}")
        alpha = model.quantize.alpha
        for w in (0.0, 0.5):
            row = {}
            for a in (0.0, alpha):
                model.quantize.alpha = a
                row[f"alpha{a:g}"] = face_iqa_mean(scorer, (model(lq, w=w, quality=0.9).image.clamp(-1, 1) + 1) / 2)
            model.quantize.alpha = alpha
            result[f"hq_w{w:g}"] = row
            print(f"w={w:g}, q=0.9: face-iqa alpha 0 {row['alpha0']:.3f}, alpha {alpha:g} {row[f'alpha{alpha:g}']:.3f}")
    return result


def ceiling(args) -> dict:
    import numpy as np
    import torch

    from iqpfr.data.degradations import sharpness_variant
    from iqpfr.io import list_images
    from iqpfr.models.autoencoder import VQAutoEncoder
    from iqpfr.quality.registry import create_scorer
    from iqpfr.restorer import model_input_size
    from iqpfr.train.networks import read_weights

    like = load_restorer(None)
    vq = VQAutoEncoder.matching(like)
    vq.load_state_dict({k: v.float() for k, v in read_weights(args.weights).items()}, strict=True)
    vq.eval()
    scorer = create_scorer("face-iqa").eval()
    side = model_input_size(like)
    faces = (read_batch([p for p, _ in list_images([args.val])], side) * 255).round().byte()
    faces = faces.permute(0, 2, 3, 1).numpy()
    result: dict = {"vqgan": str(args.weights), "levels": {}}
    for level in LEVELS:
        x = torch.from_numpy(np.stack([sharpness_variant(np.ascontiguousarray(f), level) for f in faces]))
        x = x.permute(0, 3, 1, 2).float() / 255.0
        row = {"image": face_iqa_mean(scorer, x)}
        with torch.no_grad():
            z = vq.encode(x * 2 - 1)
            for name, hq in (("decoded_dual", 1.0), ("decoded_common", 0.0)):
                quant = vq.quantize_latent(z, torch.full((len(x),), hq)).quant
                row[name] = face_iqa_mean(scorer, (vq.generator(quant).clamp(-1, 1) + 1) / 2)
        result["levels"][f"{level:+g}"] = row
        print(f"level {level:+.2f}: image {row['image']:.3f}  decoded codes: both codebooks "
              f"{row['decoded_dual']:.3f}, common only {row['decoded_common']:.3f}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("sweep", "ceiling"))
    ap.add_argument("weights", type=Path, nargs="?", default=None,
                    help="sweep: restorer weights (default: shipped); ceiling: stage-I VQGAN weights (required)")
    ap.add_argument("--val", type=Path, default=dm.SHARED_DATA / "gpen_ffhq10")
    ap.add_argument("--work", type=Path, default=dm.REPO / "runs" / "quality_probe", help="test set cache")
    ap.add_argument("--adain", choices=("file", "on", "off"), default="file",
                    help="sweep: AdaIN before decoding as the file says, or forced on / off")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.mode == "ceiling" and args.weights is None:
        ap.error("ceiling needs the stage-I VQGAN weights")
    if not args.val.is_dir():
        ap.error(f"{args.val}: validation faces not found")
    result = sweep(args) if args.mode == "sweep" else ceiling(args)
    if args.json is not None:
        from iqpfr.utils.fs import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
