"""The contact sheet of the shipped model (``docs/<preset>_contact_sheet.png``), and the labelled
image grid it is made of (also used by ``do_no_harm.py``).

LQ | restored | GT for ``gpen_ffhq10`` degraded with the "large" preset (seed 0) and the four
``gpen_ffhq_val_pairs``, then before | after for the real faces of ``codeformer_cropped_faces`` and
``codeformer_gray_faces`` (``iqpfr.FaceRestorer``, aligned input, fidelity 0.5, quality 0.9: what
``iqpfr restore --aligned`` does).
"""

from __future__ import annotations

import tempfile
from pathlib import Path


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

