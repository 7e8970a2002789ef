"""Does the discrete quality loss raise the scorer's opinion of stage-II outputs? A small ablation.

    python benchmarks/train_quality_ablation.py configs/tiny/stage2.yaml \
        --init runs/tiny64/stage1/model_ema.safetensors --steps 150 \
        --set data.resolution=64 --set "model.overrides={}" --set batch_size=8 --set optim.lr=4e-4

Trains stage II three times from the same stage-I weights on the first faces of the configured
folder: without the quality loss, with it in the discrete (straight-through) space, and with the
continuous-space ablation (weight ``--weight`` from step 1). Each EMA model then restores the
next ``--eval`` faces (held out, "large" degradation, fixed seed) at quality target 0.9; the
script prints the mean face-iqa score of the outputs and their L1 distance to the ground truth.
"""

from __future__ import annotations

import argparse
import json
import tempfile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--init", required=True, help="stage-I weights (model_ema.safetensors)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--train-faces", type=int, default=1000)
    ap.add_argument("--eval", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    import torch

    from iqpfr.data.dataset import FaceDataset, preset_degrader
    from iqpfr.quality.learned import FaceIQA
    from iqpfr.train.config import load_train_config
    from iqpfr.train.loop import train

    torch.set_num_threads(args.threads)
    scorer = FaceIQA()
    variants = {"no quality loss": ["stage2.quality_weight=0"],
                "discrete (straight-through)": [f"stage2.quality_weight={args.weight}", "stage2.quality_start=1"],
                "continuous (ablation)": [f"stage2.quality_weight={args.weight}", "stage2.quality_start=1",
                                          "stage2.quality_space=continuous"]}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, sets) in enumerate(variants.items()):
            cfg = load_train_config(args.config, [*args.overrides, f"model.init={args.init}", f"run_dir={tmp}/{i}",
                                                  f"total_steps={args.steps}", f"data.limit={args.train_faces}",
                                                  "ckpt_every=0", "sample_every=0", *sets])
            if i == 0:
                res = cfg.data.resolution
                ds = FaceDataset(cfg.data.folders, resolution=res, seed=123, default_score=0.5,
                                 degrader=preset_degrader("large", resolution=res),
                                 limit=args.train_faces + args.eval)
                held = range(args.train_faces, min(len(ds), args.train_faces + args.eval))
                lq = torch.stack([ds[(0, j)]["lq"] for j in held])
                gt = torch.stack([ds[(0, j)]["gt"] for j in held])
            out = train(cfg, progress=False, stage_overrides={"scorer": scorer})
            with torch.no_grad():
                y = out["stage"].ema.shadow(lq, w=0.0, quality=0.9).image.clamp(-1, 1)
                results[name] = {"face_iqa": scorer.score((y + 1) / 2).mean().item(),
                                 "l1_to_gt": (y - gt).abs().mean().item()}
        with torch.no_grad():
            results["(LQ input)"] = {"face_iqa": scorer.score((lq + 1) / 2).mean().item(),
                                     "l1_to_gt": (lq - gt).abs().mean().item()}
            results["(GT)"] = {"face_iqa": scorer.score((gt + 1) / 2).mean().item(), "l1_to_gt": 0.0}
    for name, r in results.items():
        print(f"{name:30s} face-iqa {r['face_iqa']:.3f}   L1 to GT {r['l1_to_gt']:.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
