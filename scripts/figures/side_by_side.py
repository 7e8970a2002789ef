"""Put images side by side with a label above each (README pictures from project outputs).

    python3 scripts/figures/side_by_side.py in.jpg a/final_results/in.jpg b/final_results/in.jpg \\
        --labels "input,bicubic background,Real-ESRGAN background" --crop 0.1,0.1,0.6,0.6 -o docs/x.png

Images are resized to the height of the largest one (nearest neighbour, so pixels stay visible);
``--crop x0,y0,x1,y1`` (fractions of each image) shows the same region of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from iqpfr.io import read_rgb, write_rgb  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--labels", default="")
    ap.add_argument("--crop", default=None, help="x0,y0,x1,y1 as fractions")
    ap.add_argument("--height", type=int, default=0, help="output height of each panel (default: the largest)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args(argv)
    labels = [t.strip() for t in args.labels.split(",")] if args.labels else [p.parent.parent.name for p in args.images]
    panels = []
    for path in args.images:
        image = read_rgb(path)
        if args.crop:
            x0, y0, x1, y1 = (float(v) for v in args.crop.split(","))
            h, w = image.shape[:2]
            image = image[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]
        panels.append(image)
    height = args.height or max(p.shape[0] for p in panels)
    row = []
    for panel, label in zip(panels, labels + [""] * len(panels)):
        width = round(panel.shape[1] * height / panel.shape[0])
        resized = cv2.resize(panel, (width, height), interpolation=cv2.INTER_NEAREST)
        title = np.full((30, width, 3), 255, np.uint8)
        cv2.putText(title, label, (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        row.append(np.concatenate([title, resized], 0))
        row.append(np.full((height + 30, 6, 3), 255, np.uint8))
    write_rgb(args.output, np.concatenate(row[:-1], 1))
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
