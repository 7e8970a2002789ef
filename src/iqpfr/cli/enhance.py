"""``iqpfr enhance IMAGES --task underwater -o OUT``: enhance whole images with a quality-prior model.

IMAGES: files, folders (``--recursive`` descends) and globs, as for ``iqpfr restore``. Results go to

    OUT/final_results/<name>[_suffix].<ext>

``--quality-target Q`` (in [0, 1]; a comma list writes one result per value, suffixed _q<value>)
sets how strongly contrast, colour and detail are raised; the default is the model's calibrated
level of the reference enhancements (best fidelity). Existing outputs are skipped unless
--overwrite; inputs are never written; writes are atomic. An unreadable image is one line on stderr
naming the file, the others go on, and the exit code is 1.
"""

from __future__ import annotations

import argparse

TASKS = ("underwater",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("enhance", help="enhance whole images (underwater) with a quality-prior model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files, folders or globs")
    p.add_argument("--task", choices=TASKS, default="underwater", help="enhancement task (default underwater)")
    p.add_argument("-o", "--output", default="results", help="output folder (default: results)")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders of folder inputs")
    p.add_argument("--quality-target", "--quality_target", default=None, metavar="Q[,Q...]",
                   help="quality target in [0, 1] (default: the model's calibrated reference level)")
    p.add_argument("--weights", default=None, help="a .safetensors of the task (default: the shipped one)")
    p.add_argument("--tile", type=int, default=512, help="tile size in pixels, 0 = whole image (default 512)")
    p.add_argument("--tile-overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--ext", default="auto", choices=("auto", "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"),
                   help="output format (auto: the input's)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    p.add_argument("--suffix", default=None, help="suffix appended to output names")
    p.add_argument("--json", default=None, metavar="REPORT.json", help="write a report (per image: size, q, time)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument("--dry-run", action="store_true", help="list what would be written, load nothing")
    p.add_argument("--max-pixels", type=float, default=None,
                   help="refuse images above this many megapixels (decompression-bomb guard, default 178)")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    p.set_defaults(func=run)


def _qualities(text: str | None) -> list[float | None]:
    from iqpfr.cli import CLIError

    if text is None:
        return [None]
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--quality-target takes numbers in [0, 1] (comma-separated to sweep), got {text!r}") from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise CLIError(f"--quality-target must be in [0, 1], got {text}")
    return list(dict.fromkeys(values))


def run(args: argparse.Namespace) -> int:
    """Handler of ``iqpfr enhance``; 0 when every image was enhanced (or skipped), 1 otherwise."""
    import sys
    from pathlib import Path

    from iqpfr.cli import CLIError
    from iqpfr.cli.restore import _expand_input
    from iqpfr.io import IMAGE_EXTENSIONS, image_files

    qualities = _qualities(args.quality_target)
    if args.tile < 0 or args.tile_overlap < 0:
        raise CLIError("--tile and --tile-overlap must be >= 0")
    out_dir = Path(args.output)
    final_dir = out_dir / "final_results"
    items: list[dict] = []
    names: set[str] = set()
    seen: set = set()
    for text in args.inputs:
        for path, base, error in _expand_input(text, args.recursive, IMAGE_EXTENSIONS, image_files):
            if error is not None:
                items.append({"input": str(path), "status": "failed", "error": error})
                continue
            key = path.resolve()
            if key in seen or key.is_relative_to(final_dir.resolve()):
                continue
            seen.add(key)
            name, counter = base, 2
            while name in names:
                name, counter = f"{base}_{counter}", counter + 1
            names.add(name)
            for q in qualities:
                suffix = f"_{args.suffix}" if args.suffix else ""
                if len(qualities) > 1:
                    suffix += f"_q{q:g}"
                ext = path.suffix.lower() if args.ext == "auto" else f".{args.ext}"
                if ext not in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"):
                    ext = ".png"
                target = final_dir / f"{name}{suffix}{ext}"
                item = {"input": str(path), "output": str(target), "quality_target": q, "status": "pending",
                        "_path": path, "_target": target}
                if target.resolve() in seen or target.resolve() == key:
                    item.update(status="failed", error=f"{path}: the output would overwrite an input; choose another -o")
                elif target.exists() and not args.overwrite:
                    item.update(status="skipped", note=f"{target} exists (use --overwrite to replace it)")
                items.append(item)
    inputs = {i["_path"].resolve() for i in items if "_path" in i}
    for item in items:
        if "_target" in item and item["_target"].resolve() in inputs and item["status"] != "failed":
            item.update(status="failed", error=f"{item['input']}: the output would overwrite an input; choose another -o")
    for item in items:
        if item["status"] == "failed":
            print(f"iqpfr enhance: error: {item['error']}", file=sys.stderr)
    pending = [i for i in items if i["status"] == "pending"]
    if args.dry_run:
        for item in items:
            if item["status"] in ("pending", "skipped"):
                state = "skip (exists)" if item["status"] == "skipped" else "write"
                print(f"{item['input']} -> {item['output']} [{state}]")
        return 1 if any(i["status"] == "failed" for i in items) else 0

    enhancer = None
    if pending:
        import torch

        from iqpfr.tasks.underwater.enhancer import UnderwaterEnhancer

        if args.threads:
            torch.set_num_threads(args.threads)
        try:
            enhancer = UnderwaterEnhancer.from_pretrained(args.weights, tile=args.tile, overlap=args.tile_overlap)
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            raise CLIError(" ".join(str(exc).split())) from None
        if not args.quiet:
            print(f"iqpfr enhance: task {args.task}, model {enhancer.description}", file=sys.stderr)
    _enhance_items(enhancer, pending, args)
    printed: set[str] = set()
    for item in pending:  # one line per file, also when a sweep planned several outputs of it
        if item["status"] == "failed" and item["error"] not in printed:
            printed.add(item["error"])
            print(f"iqpfr enhance: error: {item['error']}", file=sys.stderr)
    _write_report(args, items, enhancer)
    counts = {s: sum(1 for i in items if i["status"] == s) for s in ("ok", "skipped", "failed")}
    print(f"iqpfr enhance: {counts['ok']} enhanced, {counts['skipped']} skipped (exist), "
          f"{counts['failed']} failed -> {out_dir}", file=sys.stderr)
    if not items:
        print("iqpfr enhance: error: no input images found", file=sys.stderr)
        return 1
    return 1 if counts["failed"] else 0


def _enhance_items(enhancer, pending: list[dict], args: argparse.Namespace) -> None:
    import time

    from iqpfr.cli.restore import _one_line
    from iqpfr.io import DEFAULT_MAX_PIXELS, ImageReadError, read_image, write_image

    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else int(args.max_pixels * 1e6)
    cache: dict = {}
    for item in pending:
        path = item["_path"]
        try:
            if path not in cache:
                cache.clear()
                cache[path] = read_image(path, max_pixels=max_pixels)
            image = cache[path]
            t0 = time.perf_counter()
            q = item["quality_target"]
            result = enhancer.enhance(image, quality=q)
            item["seconds"] = round(time.perf_counter() - t0, 3)
            item["size"] = list(image.size)
            item["quality_target"] = enhancer.default_quality if q is None else q
            item["_target"].parent.mkdir(parents=True, exist_ok=True)
            notes = write_image(item["_target"], result, quality=args.jpeg_quality, overwrite=args.overwrite)
            notes = list(image.notes) + list(notes)
            if notes:
                item["notes"] = notes
            item["status"] = "ok"
        except ImageReadError as exc:
            item.update(status="failed", error=_one_line(exc, str(path)))
        except (OSError, ValueError, RuntimeError, MemoryError) as exc:
            item.update(status="failed", error=_one_line(exc, str(path)))


def _write_report(args: argparse.Namespace, items: list[dict], enhancer) -> None:
    if not args.json:
        return
    import json

    from iqpfr import __version__
    from iqpfr.utils.fs import atomic_write_text

    report = {
        "iqpfr_version": __version__,
        "settings": {"task": args.task, "quality_target": args.quality_target, "weights": args.weights,
                     "default_quality": None if enhancer is None else enhancer.default_quality,
                     "tile": args.tile, "tile_overlap": args.tile_overlap, "output": str(args.output)},
        "images": [{k: v for k, v in item.items() if not k.startswith("_")} for item in items],
    }
    atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
