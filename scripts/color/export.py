"""Export the colour fine-tune (configs/color128/stage2.yaml) as the shipped fp16 file.

    python3 scripts/color/export.py runs/color128/stage2/model_ema.safetensors \
        -o src/iqpfr/weights/iqpfr-128-color.safetensors [--overwrite]

The source is the run's exported EMA weights or one of its checkpoints (``read_weights`` takes the
EMA copy of a checkpoint). Prints size, sha256 and the fp16-vs-fp32 output difference on one input.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    import torch

    from iqpfr.train.config import load_train_config
    from iqpfr.train.networks import build_model_preset, load_matching, read_weights
    from iqpfr.weights.checkpoint import save_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path, help="run model_ema.safetensors or checkpoint .pt")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "src/iqpfr/weights/iqpfr-128-color.safetensors")
    p.add_argument("--config", type=Path, default=ROOT / "configs/color128/stage2.yaml")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.output.exists() and not args.overwrite:
        print(f"{args.output}: exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    cfg = load_train_config(str(args.config), [])
    model = build_model_preset(cfg).eval()
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in read_weights(args.weights).items()}
    missing = load_matching(model, state, what=str(args.weights))
    if missing:
        print(f"{args.weights}: {len(missing)} model tensors missing, e.g. {missing[:3]}", file=sys.stderr)
        return 1
    path = save_model(copy.deepcopy(model).half(), args.output, overwrite=True,
                      extra_config={"task": "color", "source": "configs/color128/stage2.yaml"})
    from iqpfr.weights.checkpoint import load_model

    reloaded = load_model(path).float().eval()
    x = torch.linspace(-1, 1, 3 * 128 * 128).reshape(1, 3, 128, 128)
    with torch.no_grad():
        a = model(x, w=torch.zeros(1)).image
        b = reloaded(x, w=torch.zeros(1)).image
    data = path.read_bytes()
    print(f"wrote {path}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}, "
          f"fp16 vs fp32 max |diff| {float((a - b).abs().max()):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
