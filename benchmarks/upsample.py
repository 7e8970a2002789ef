"""Background up-sampling: Real-ESRGAN against bicubic on whole photos, tile seams, and CPU time.

For every photo of ``--images`` at ``--scale``: NIQE and PIQE of the bicubic resize and of the
Real-ESRGAN background (tiled at ``--tile`` with ``--overlap``), and the seam report of the tiled
result (the largest mean jump between neighbouring output columns/rows at a tile boundary against
the largest elsewhere). Seconds per output megapixel are timed on ``--time-image`` with the plain
network and with iqpfr's CPU kernels (when they build), in the same run. Prints a table, writes
JSON; the last line is the headline.

    python benchmarks/upsample.py --images ../shared/data/codeformer_whole_imgs --scale 2 --tile 192 \\
        --threads 2 --json benchmarks/results/upsample_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from iqpfr.io import image_files, read_image  # noqa: E402
from iqpfr.quality.niqe import NIQE  # noqa: E402
from iqpfr.quality.piqe import PIQE  # noqa: E402
from iqpfr.upsample import Upsampler, seam_report, tile_boundaries  # noqa: E402
from iqpfr.utils.fs import atomic_write_text  # noqa: E402


def bicubic(pixels: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    size = (round(pixels.shape[1] * scale), round(pixels.shape[0] * scale))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC)


def scores(pixels: np.ndarray, niqe: NIQE, piqe: PIQE) -> dict[str, float]:
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        return {"niqe": float(niqe(x)[0]), "piqe": float(piqe(x)[0])}


def mflop_per_input_pixel(architecture: str, side: int = 64) -> float:
    """Convolution work of a super-resolution network per input pixel (MFLOP, multiply and add apart),
    counted by ``torch.utils.flop_counter`` on the meta device (nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    from iqpfr.models.rrdbnet import create_sr_model

    with torch.device("meta"):
        model = create_sr_model(architecture)
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, 3, side, side, device="meta"))
    return counter.get_total_flops() / (side * side) / 1e6


def timed_upscale(upsampler: Upsampler, pixels: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = upsampler.upscale(pixels, scale)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "codeformer_whole_imgs"))
    parser.add_argument("--upsampler", default="realesrgan-x4plus", help="zoo name or weight file")
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--tile", type=int, default=192)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--time-image", default=None, help="photo to time (default: the first one)")
    parser.add_argument("--cpu-kernels", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    photos = image_files(Path(args.images))[: args.limit]
    if not photos:
        print(f"error: no images in {args.images}", file=sys.stderr)
        return 1
    plain = Upsampler.from_pretrained(args.upsampler, device="cpu", tile=args.tile, overlap=args.overlap)
    fast = None
    kernel_note = "off"
    if args.cpu_kernels != "off":
        try:
            fast = Upsampler.from_pretrained(args.upsampler, device="cpu", tile=args.tile, overlap=args.overlap,
                                             cpu_kernels=True)
            kernel_note = "on"
        except Exception as exc:  # no compiler: the table says so
            if args.cpu_kernels == "on":
                raise
            kernel_note = f"unavailable ({' '.join(str(exc).split())[:120]})"
    best = fast or plain

    # --- work per input pixel of the offered networks (architecture facts, no weights needed)
    work = {name: mflop_per_input_pixel(name) for name in ("realesrgan-x4plus", "realesr-animevideov3")}
    print("work per input pixel: " + ", ".join(f"{n} {v:.1f} MFLOP" for n, v in work.items())
          + f" ({work['realesrgan-x4plus'] / work['realesr-animevideov3']:.0f}x)")

    # --- time per megapixel, both paths on the same photo
    time_path = Path(args.time_image) if args.time_image else photos[0]
    pixels = read_image(time_path).rgb8()
    out_mp = round(pixels.shape[0] * args.scale) * round(pixels.shape[1] * args.scale) / 1e6
    timing = {"image": time_path.name, "input_size": [pixels.shape[1], pixels.shape[0]], "output_mp": out_mp}
    reference, seconds = timed_upscale(plain, pixels, args.scale)
    timing["plain_s"] = seconds
    timing["plain_s_per_mp"] = seconds / out_mp
    if fast is not None:
        fast_out, seconds = timed_upscale(fast, pixels, args.scale)
        timing["kernels_s"] = seconds
        timing["kernels_s_per_mp"] = seconds / out_mp
        timing["kernels_speedup"] = timing["plain_s"] / seconds
        timing["kernels_max_diff_grey_levels"] = int(np.abs(fast_out.astype(int) - reference.astype(int)).max())
    print(f"time on {time_path.name} ({pixels.shape[1]}x{pixels.shape[0]} -> x{args.scale:g}, {out_mp:.3f} MP out): "
          f"plain {timing['plain_s']:.1f} s = {timing['plain_s_per_mp']:.1f} s/MP" + (
              f"; kernels {timing['kernels_s']:.1f} s = {timing['kernels_s_per_mp']:.1f} s/MP "
              f"({timing['kernels_speedup']:.2f}x)" if fast is not None else f"; kernels {kernel_note}"))

    # --- quality and seams on every photo
    niqe, piqe = NIQE(), PIQE()
    rows = []
    print(f"{'photo':<10} {'size':>10} {'NIQE bic':>9} {'NIQE esr':>9} {'PIQE bic':>9} {'PIQE esr':>9} "
          f"{'seam max':>9} {'inner max':>9} {'tiles':>6}")
    for photo in photos:
        pixels = read_image(photo).rgb8()
        height, width = pixels.shape[:2]
        resized = bicubic(pixels, args.scale)
        if photo == time_path:
            enhanced = fast_out if fast is not None else reference
        else:
            enhanced, _ = timed_upscale(best, pixels, args.scale)
        factor = args.scale  # output pixels per input pixel: core boundaries land at b * factor
        seams = seam_report(enhanced, [round(b * factor) for b in tile_boundaries(width, args.tile)],
                            [round(b * factor) for b in tile_boundaries(height, args.tile)])
        row = {"image": photo.name, "size": [width, height], "bicubic": scores(resized, niqe, piqe),
               "realesrgan": scores(enhanced, niqe, piqe), "seams": seams}
        rows.append(row)
        tiles = (len(tile_boundaries(width, args.tile)) + 1) * (len(tile_boundaries(height, args.tile)) + 1)
        print(f"{photo.name:<10} {width:>4}x{height:<5} {row['bicubic']['niqe']:>9.2f} {row['realesrgan']['niqe']:>9.2f} "
              f"{row['bicubic']['piqe']:>9.1f} {row['realesrgan']['piqe']:>9.1f} {seams['boundary_max']:>9.4f} "
              f"{seams['interior_max']:>9.4f} {tiles:>6}", flush=True)

    def mean(kind: str, metric: str) -> float:
        return float(np.mean([r[kind][metric] for r in rows]))

    with_seams = [r for r in rows if r["seams"]["boundaries"]]
    seam_ratio = max((r["seams"]["boundary_max"] / max(r["seams"]["interior_max"], 1e-12) for r in with_seams), default=0.0)
    summary = {
        "niqe_bicubic": mean("bicubic", "niqe"), "niqe_realesrgan": mean("realesrgan", "niqe"),
        "piqe_bicubic": mean("bicubic", "piqe"), "piqe_realesrgan": mean("realesrgan", "piqe"),
        "niqe_lower_on": sum(r["realesrgan"]["niqe"] < r["bicubic"]["niqe"] for r in rows),
        "photos": len(rows), "photos_with_tile_boundaries": len(with_seams),
        "worst_seam_ratio": seam_ratio,
    }
    result = {"settings": {**vars(args), "torch": torch.__version__, "cpu_kernels": kernel_note},
              "mflop_per_input_pixel": work, "timing": timing, "photos": rows, "summary": summary}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    speed = (f"{timing['kernels_s_per_mp']:.1f} s/MP with the CPU kernels, {timing['plain_s_per_mp']:.1f} without"
             if fast is not None else f"{timing['plain_s_per_mp']:.1f} s/MP (CPU kernels {kernel_note})")
    print(f"headline: background NIQE {summary['niqe_bicubic']:.2f} (bicubic) -> {summary['niqe_realesrgan']:.2f} "
          f"(Real-ESRGAN), lower on {summary['niqe_lower_on']}/{len(rows)} photos; PIQE {summary['piqe_bicubic']:.1f} -> "
          f"{summary['piqe_realesrgan']:.1f}; worst seam / interior jump {seam_ratio:.2f} over "
          f"{len(with_seams)} tiled photos; {speed} ({args.threads} threads, x{args.scale:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
