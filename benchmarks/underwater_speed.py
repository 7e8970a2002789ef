"""Time and seams of the underwater enhancer on a 1280x1024 image, tiled against one whole window.

    python benchmarks/underwater_speed.py [--image ../shared/data/lsui_test108/input/25.jpg] [--threads 2]

The baseline measured in the same run is the untiled network on the whole image (tile 0). Reported:
seconds for each (best of --repeats), their ratio, the largest difference tiled - whole, and the
seam report (iqpfr.upsample.tiles.seam_report) of the tiled output: the largest mean jump across a
tile boundary against the largest and 99th percentile jump elsewhere. Results go to
benchmarks/results/underwater_speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="../shared/data/lsui_test108/input/25.jpg")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/underwater_speed.json")
    args = parser.parse_args()

    import numpy as np
    import torch

    from iqpfr.io import read_rgb
    from iqpfr.tasks.underwater.enhancer import UnderwaterEnhancer
    from iqpfr.upsample.tiles import seam_report, tile_boundaries

    torch.set_num_threads(args.threads)
    rgb = read_rgb(args.image)
    if rgb.shape[:2] != (1024, 1280):
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).resize((1280, 1024), Image.BICUBIC))
    image = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    results = {}
    outputs = {}
    for name, tile in (("whole", 0), ("tiled", args.tile)):
        enhancer = UnderwaterEnhancer.from_pretrained(args.weights, tile=tile, overlap=args.overlap)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = enhancer.enhance_tensor(image)
            best = min(best, time.perf_counter() - t0)
        results[f"{name}_seconds"] = best
        outputs[name] = out[0].permute(1, 2, 0).numpy()
    tiled8 = np.round(outputs["tiled"] * 255.0)
    seams = seam_report(tiled8, tile_boundaries(1280, args.tile), tile_boundaries(1024, args.tile))
    diff = np.abs(outputs["tiled"] - outputs["whole"]) * 255.0
    report = {
        "image": args.image, "size": [1280, 1024], "threads": args.threads, "tile": args.tile,
        "overlap": args.overlap, **results, "tiled_over_whole": results["tiled_seconds"] / results["whole_seconds"],
        "max_abs_diff_tiled_vs_whole_8bit": float(diff.max()), "mean_abs_diff_8bit": float(diff.mean()),
        "seams_8bit": seams, "no_seam": seams["boundary_max"] <= seams["interior_max"],
        "torch": torch.__version__,
        "command": "python benchmarks/underwater_speed.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from iqpfr.utils.fs import atomic_write_text

    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
