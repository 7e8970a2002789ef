"""Training speed (images per second) of each stage for a config, on this machine.

    python benchmarks/train_speed.py configs/cpu128 --steps 10 [--threads 2] [--device cpu]

Runs every ``stage{1,2,3}.yaml`` of the folder for ``--steps`` optimiser steps on its real data
(stage II/III start from random weights written to a temporary folder; speed does not depend on
them), after one warm-up step, and prints images/s. Needs the folders named in the configs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config_dir", type=Path)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--stages", default="1,2,3")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    from iqpfr.train.config import load_train_config
    from iqpfr.train.loop import train
    from iqpfr.train.networks import build_autoencoder, build_model_preset

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        first = load_train_config(str(args.config_dir / "stage1.yaml"), args.overrides)
        model, vq = build_model_preset(first), build_autoencoder(first)
        model.load_autoencoder_state_dict(vq.state_dict())
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "full.safetensors"))
        save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, str(tmp / "vq.safetensors"))
        for stage in (int(s) for s in args.stages.split(",")):
            sets = [*args.overrides, f"run_dir={tmp}/s{stage}", f"device={args.device}",
                    f"total_steps={args.steps + 1}", f"log_every={args.steps + 1}", "sample_every=0",
                    "ckpt_every=0", "data.scores_csv=null", "data.default_score=0.8",
                    f"model.init={tmp}/full.safetensors", f"model.vqgan={tmp}/vq.safetensors",
                    "model.init_discriminator=null", "stage1.kmeans_init=false"]
            if stage == 1:
                sets += ["stage1.disc_start=1", "stage1.perceptual=pyramid"]
            if stage == 3:
                sets += ["stage3.disc_start=1", "stage3.perceptual=pyramid"]
            cfg = load_train_config(str(args.config_dir / f"stage{stage}.yaml"), sets)
            t0 = time.perf_counter()
            out = train(cfg, progress=False, stop_after=1)  # warm-up step (no checkpoint)
            cfg_run = load_train_config(str(args.config_dir / f"stage{stage}.yaml"),
                                        [*sets, f"run_dir={tmp}/t{stage}"])
            t1 = time.perf_counter()
            out = train(cfg_run, progress=False)
            per_step = cfg_run.batch_size * cfg_run.grad_accum
            print(f"{args.config_dir.name} stage {stage}: {cfg_run.model.name} {cfg_run.data.resolution}px "
                  f"batch {per_step}: {out['images_per_s']:.2f} images/s "
                  f"(startup {t1 - t0:.1f} s, threads {torch.get_num_threads()}, device {args.device})")


if __name__ == "__main__":
    main()
