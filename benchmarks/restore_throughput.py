"""Throughput of whole-photo restoration: one photo at a time vs faces batched across photos with
reading/detection/pasting overlapped in threads. Prints photos/s and the speed-up ratio.

    python benchmarks/restore_throughput.py --model codeformer-tiny --photos 12 --device cpu
    python benchmarks/restore_throughput.py --model codeformer --photos 64 --device cuda --batch-size 16

Networks are randomly initialised (speed does not depend on the weights). Photos are 2x2 mosaics of
the package's sample photo (4 faces each).
"""

from __future__ import annotations

import argparse
import importlib.resources
import time

import numpy as np
import torch
from PIL import Image

from iqpfr.restorer import FaceRestorer


def mosaic() -> np.ndarray:
    path = importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"
    tile = np.asarray(Image.open(str(path)).convert("RGB"))
    return np.block([[[tile], [tile[:, ::-1]]], [[tile[:, ::-1]], [tile]]]).reshape(1024, 1024, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="codeformer-tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    restorer = FaceRestorer.from_pretrained(model=args.model, random_init=True, device=args.device)
    photo = mosaic()
    photos = [photo.copy() for _ in range(args.photos)]
    restorer.restore(photo)  # warm-up: detector, kernels

    def timed(fn) -> float:
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    serial = timed(lambda: [restorer.restore(p) for p in photos])
    batched = timed(lambda: restorer.restore_batch(photos, batch_size=args.batch_size, workers=args.workers))
    faces = sum(len(r.faces) for r in restorer.restore_batch(photos[:1]))
    print(f"model {args.model} on {restorer.device}, {args.photos} photos x {faces} faces, "
          f"torch threads {torch.get_num_threads()}")
    print(f"one photo at a time          : {args.photos / serial:6.2f} photos/s")
    print(f"batched ({args.batch_size} faces, {args.workers} workers): {args.photos / batched:6.2f} photos/s")
    print(f"speed-up ratio               : {serial / batched:6.2f}x")


if __name__ == "__main__":
    main()
