"""Turn the last stage's EMA weights into the shipped model file, its hash and a contact sheet.

    python3 scripts/default_model/finalize.py                      # stage III shards from runs/device/stage3
    python3 scripts/default_model/finalize.py --weights runs/cpu128/stage3/model_ema.safetensors \\
        --config configs/cpu128/stage3.yaml                        # the CPU fallback (iqpfr-128)

1. Rebuilds the configured preset (alpha and HQ+ threshold from the config), loads the weights
   strictly, casts to fp16 and writes a self-describing file with ``iqpfr.save_model`` (default
   ``src/iqpfr/weights/<preset>.safetensors``); refuses to replace an existing file unless
   ``--overwrite``. Reports its size against the 40 MB limit of issue 8 and the largest output
   difference fp16 vs fp32 on a validation face.
2. Prints the sha256 and size for the preset's zoo entry (``--patch-zoo`` writes them into
   ``src/iqpfr/weights/zoo.py``).
3. Writes the contact sheet PNG: LQ | restored | GT for ``gpen_ffhq10`` degraded with the "large"
   preset (seed 0) and the four ``gpen_ffhq_val_pairs``, then before | after for the real faces of
   ``codeformer_cropped_faces`` and ``codeformer_gray_faces`` (``iqpfr.FaceRestorer``, aligned input,
   fidelity 0.5, quality 0.9: what ``iqpfr restore --aligned`` does).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dm_common as dm  # noqa: E402

WEIGHTS_DIR = dm.REPO / "src" / "iqpfr" / "weights"  # default output: WEIGHTS_DIR/<preset>.safetensors
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "stage3.yaml"
SIZE_LIMIT = 40_000_000  # issue 8: "at most 40 MB"


def load_final_state(weights: Path | None, shards: Path | None):
    """fp32 state dict from a .safetensors file / training checkpoint, or from fp16 shards."""
    import torch

    if weights is not None:
        from iqpfr.train.networks import read_weights

        return {k: (v.float() if v.is_floating_point() else v) for k, v in read_weights(weights).items()}
    return dm.load_sharded(shards, dtype=torch.float32)


def build_model(config: Path, overrides: list[str]):
    """(network of the config's preset with random weights, preset name)."""
    from iqpfr.train.config import load_train_config
    from iqpfr.train.networks import build_model_preset

    cfg = load_train_config(str(config), overrides)
    return build_model_preset(cfg), cfg.model.name


def export_fp16(model, out: Path, overwrite: bool) -> Path:
    import copy

    from iqpfr.weights.checkpoint import save_model

    if out.exists() and not overwrite:
        raise SystemExit(f"{out}: exists; pass --overwrite to replace it")
    half = copy.deepcopy(model).half()
    return save_model(half, out, overwrite=overwrite)


def patch_zoo(zoo_path: Path, name: str, sha: str, size: int) -> bool:
    """Write ``sha256=`` and ``size=`` into the zoo entry ``name`` (replacing old values)."""
    text = zoo_path.read_text()
    start = text.find(f'name="{name}",')
    if start < 0:
        return False
    end = text.find("ZooEntry(", start)
    end = len(text) if end < 0 else end
    block = text[start:end]
    block = re.sub(r'\n\s*sha256="[0-9a-f]*",', "", block)
    block = re.sub(r"\n\s*size=[0-9_]+,", "", block)
    indent = re.search(r"\n(\s*)embedded=True,", block)
    if indent is None:
        return False
    pad = indent.group(1)
    block = block.replace(f"\n{pad}embedded=True,", f'\n{pad}embedded=True,\n{pad}sha256="{sha}",\n{pad}size={size:_},', 1)
    from iqpfr.utils.fs import atomic_write_text

    atomic_write_text(zoo_path, text[:start] + block + text[end:])
    return True


# -- contact sheet -----------------------------------------------------------------------------------
def tile(img, size: int):
    import cv2
    import numpy as np

    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=interp)


def label(canvas, text: str, x: int, y: int) -> None:
    import cv2

    cv2.putText(canvas, text, (x + 4, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, (x + 4, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def grid(groups: list[list], per_row: int, size: int, captions: list[str]):
    """Rows of ``per_row`` groups, each group a list of tiles side by side."""
    import numpy as np

    width = len(groups[0]) * size if groups else size
    rows = [groups[i:i + per_row] for i in range(0, len(groups), per_row)]
    canvas = np.full((len(rows) * size, per_row * width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, group in enumerate(row):
            for k, t in enumerate(group):
                canvas[r * size:(r + 1) * size, c * width + k * size:c * width + (k + 1) * size] = tile(t, size)
                if r == 0 and k < len(captions):
                    label(canvas, captions[k], c * width + k * size, 0)
    return canvas


def header(text: str, width: int):
    import numpy as np

    bar = np.full((28, width, 3), 40, np.uint8)
    label(bar, text, 0, 2)
    return bar


def restore_aligned_files(restorer, paths: list[Path], fidelity: float, quality: float):
    from iqpfr.io import read_rgb

    out = []
    for p in paths:
        result = restorer.restore(str(p), aligned=True, fidelity=fidelity, quality=quality)
        img = result.image
        if getattr(img, "dtype", None) is not None and img.dtype != "uint8":
            img = read_rgb(p)  # unusual input depth: fall back to the model-only path below
            img = restore_arrays(restorer, [img], fidelity, quality)[0]
        out.append(img)
    return out


def restore_arrays(restorer, images, fidelity: float, quality: float):
    import cv2
    import numpy as np
    import torch

    side = restorer.face_size
    x = torch.from_numpy(np.stack([tile(im, side) for im in images])).permute(0, 3, 1, 2).float() / 255.0
    y = restorer.restore_aligned(x, fidelity=fidelity, quality=quality)
    res = (y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [cv2.resize(r, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_CUBIC) for r, im in zip(res, images)]


def contact_sheet(model, out_png: Path, shared_data: Path, *, tile_size: int = 160, seed: int = 0,
                  fidelity: float = 0.5, quality: float = 0.9, limit: int = 0) -> Path:
    """Write the contact sheet described in the module docstring; returns its path."""
    import numpy as np
    from PIL import Image

    from iqpfr.eval.testset import make_testset
    from iqpfr.io import list_images, read_rgb
    from iqpfr.restorer import FaceRestorer
    from iqpfr.utils.fs import atomic_write_with

    restorer = FaceRestorer(model, device="cpu", description="finalize")
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        hq = [p for p, _ in list_images([shared_data / "gpen_ffhq10"])]
        hq = hq[:limit] if limit else hq
        make_testset(hq, Path(tmp) / "val", protocol="large", seed=seed, progress=False, log=lambda m: None)
        names = sorted(p.stem for p in (Path(tmp) / "val" / "gt").glob("*.png"))
        lqs = [read_rgb(Path(tmp) / "val" / "lq" / f"{n}.png") for n in names]
        gts = [read_rgb(Path(tmp) / "val" / "gt" / f"{n}.png") for n in names]
        pairs = shared_data / "gpen_ffhq_val_pairs"
        pair_names = sorted(p.name for p in (pairs / "lq").glob("*.png")) if (pairs / "lq").is_dir() else []
        pair_names = pair_names[:limit] if limit else pair_names
        lqs += [read_rgb(pairs / "lq" / n) for n in pair_names]
        gts += [read_rgb(pairs / "hq" / n) for n in pair_names]
        restored = restore_arrays(restorer, lqs, fidelity, quality) if lqs else []
    width = 2 * 3 * tile_size
    if lqs:
        sections.append(header(f"validation: gpen_ffhq10 'large' seed {seed} ({len(names)}) + GPEN val pairs "
                               f"({len(pair_names)}); w={fidelity}, q={quality}", width))
        sections.append(grid([[a, b, c] for a, b, c in zip(lqs, restored, gts)], 2, tile_size,
                             ["LQ", "restored", "GT"]))
    for folder in ("codeformer_cropped_faces", "codeformer_gray_faces"):
        paths = [p for p, _ in list_images([shared_data / folder])] if (shared_data / folder).is_dir() else []
        paths = paths[:limit] if limit else paths
        if not paths:
            continue
        before = [read_rgb(p) for p in paths]
        after = restore_aligned_files(restorer, paths, fidelity, quality)
        sections.append(header(f"real faces: {folder} ({len(paths)}), before | after", width))
        sections.append(grid([[a, b] for a, b in zip(before, after)], 3, tile_size, ["before", "after"]))
    canvas = np.concatenate([s if s.shape[1] == width else np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)),
                                                                 constant_values=255) for s in sections])
    out_png.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_with(out_png, lambda t: Image.fromarray(canvas).save(t, format="PNG", optimize=True))


def fp16_difference(model, reloaded, size: int) -> float:
    """Max |fp32 - fp16-file| output difference on a smooth synthetic face-sized input, in [0, 2] units."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g) * 2 - 1, size=(size, size),
                                        mode="bilinear", align_corners=False)
    with torch.no_grad():
        a = model.eval()(x, w=torch.full((1,), 0.5)).image
        b = reloaded.eval()(x, w=torch.full((1,), 0.5)).image
    return float((a - b).abs().max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--shards", type=Path, default=dm.REPO / "runs" / "device" / "stage3" / "stage3_ema",
                     help="prefix of the fp16 EMA shards returned by the device")
    src.add_argument("--weights", type=Path, help="a .safetensors / checkpoint of the final stage instead")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the final stage's training config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-o", "--out", type=Path, default=None, help="default: src/iqpfr/weights/<preset>.safetensors")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--sheet", type=Path, default=None, help="default: docs/<preset>_contact_sheet.png")
    ap.add_argument("--no-sheet", action="store_true")
    ap.add_argument("--tile", type=int, default=160)
    ap.add_argument("--limit", type=int, default=0, help="faces per sheet section (0: all; tests)")
    ap.add_argument("--shared-data", type=Path, default=dm.SHARED_DATA)
    ap.add_argument("--patch-zoo", action="store_true", help="write sha256/size into the zoo entry")
    ap.add_argument("--zoo-name", default=None, help="default: the preset name")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from iqpfr.weights.checkpoint import load_model

    torch.set_num_threads(args.threads)
    state = load_final_state(args.weights, None if args.weights else args.shards)
    model, preset = build_model(args.config, args.overrides)
    model.load_state_dict(state, strict=True)
    model.eval()
    out = args.out or WEIGHTS_DIR / f"{preset}.safetensors"
    zoo_name = args.zoo_name or preset
    path = export_fp16(model, out, args.overwrite)
    size = path.stat().st_size
    sha = dm.sha256_file(path)
    reloaded = load_model(path)
    side = int(model.config.get("img_size", 256))
    diff = fp16_difference(model, reloaded, side)
    verdict = "OK" if size <= SIZE_LIMIT else f"OVER the 40 MB limit of issue 8 by {(size - SIZE_LIMIT) / 1e6:.2f} MB"
    print(f"wrote {path}: {size:,} bytes ({size / 1e6:.2f} MB, {verdict}); fp16 vs fp32 max |diff| {diff:.4f}")
    print(f"zoo entry {zoo_name!r}:  sha256=\"{sha}\",  size={size:_},")
    if args.patch_zoo:
        zoo = dm.REPO / "src" / "iqpfr" / "weights" / "zoo.py"
        print(f"patched {zoo}" if patch_zoo(zoo, zoo_name, sha, size) else
              f"could not find an embedded entry {zoo_name!r} in {zoo}; paste the line above")
    # next to the weights unless they go into the package (the record stays out of the wheel)
    dm.write_json(dm.REPO / "runs" / f"{preset}_final.json" if out.parent == WEIGHTS_DIR else
                  path.with_name(path.stem + ".finalize.json"),
                  {"file": str(path), "bytes": size, "sha256": sha, "fp16_max_abs_diff": diff,
                   "config": str(args.config), "source": str(args.weights or args.shards)})
    if not args.no_sheet:
        sheet_path = args.sheet or dm.REPO / "docs" / f"{preset}_contact_sheet.png"
        sheet = contact_sheet(reloaded, sheet_path, args.shared_data, tile_size=args.tile, limit=args.limit)
        print(f"contact sheet: {sheet} ({sheet.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
