"""Turn the last stage's EMA weights into the shipped model file, its hash and a contact sheet.

    python3 scripts/default_model/finalize.py                      # stage III shards from runs/device/stage3
    python3 scripts/default_model/finalize.py --weights runs/cpu128/stage3/model_ema.safetensors \\
        --config configs/cpu128/stage3.yaml                        # the CPU fallback (iqpfr-128)

1. The network: a run's ``model_ema.safetensors`` (``--weights`` without ``--config``) loads by path
   alone (``iqpfr.load_model``); the device's fp16 shards (``--shards``) hold tensors only, so they,
   and ``--weights`` with ``--config`` / ``--set`` (e.g. a parameter-free override such as
   ``adain``), are loaded strictly into the config's preset (``iqpfr.train.networks``).
2. ``iqpfr.weights.release.export_weights``: fp16, self-describing, read back; size against the
   40 MB limit of issue 8, sha256, largest output difference fp16 vs fp32 (default output
   ``src/iqpfr/weights/<preset>.safetensors``; never replaced unless ``--overwrite``).
3. The sha256 and size for the preset's zoo entry (``--patch-zoo`` writes them into
   ``src/iqpfr/weights/zoo.py``).
4. The contact sheet (``contact_sheet.py``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dm_common as dm  # noqa: E402

WEIGHTS_DIR = dm.REPO / "src" / "iqpfr" / "weights"  # default output: WEIGHTS_DIR/<preset>.safetensors
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "stage3.yaml"
SIZE_LIMIT = 40_000_000  # issue 8: "at most 40 MB"


def final_model(weights: Path | None, shards: Path, config: Path | None, overrides: list[str]):
    """The final network in fp32 (see the module docstring, step 1)."""
    import torch

    from iqpfr.train.config import load_train_config
    from iqpfr.train.networks import build_model_preset, read_weights
    from iqpfr.weights.checkpoint import load_model

    if weights is not None and config is None and not overrides:
        return load_model(weights)
    cfg = load_train_config(str(config or DEFAULT_CONFIG), overrides)
    model = build_model_preset(cfg)
    state = read_weights(weights) if weights is not None else dm.load_sharded(shards, dtype=torch.float32)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}, strict=True)
    return model.eval()


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--shards", type=Path, default=dm.REPO / "runs" / "device" / "stage3" / "stage3_ema",
                     help="prefix of the fp16 EMA shards returned by the device")
    src.add_argument("--weights", type=Path, help="a .safetensors / checkpoint of the final stage instead")
    ap.add_argument("--config", type=Path, default=None,
                    help=f"the final stage's training config (default for shards: {DEFAULT_CONFIG.name} here)")
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
    from iqpfr.weights.release import export_weights

    torch.set_num_threads(args.threads)
    model = final_model(args.weights, args.shards, args.config, args.overrides)
    preset = getattr(model, "preset", None) or type(model).__name__
    out = args.out or WEIGHTS_DIR / f"{preset}.safetensors"
    try:
        report = export_weights(model, out, dtype="fp16", overwrite=args.overwrite)
    except FileExistsError:
        raise SystemExit(f"{out}: exists; pass --overwrite to replace it") from None
    size, sha, diff = report.bytes, report.sha256, report.max_abs_diff
    verdict = "OK" if size <= SIZE_LIMIT else f"OVER the 40 MB limit of issue 8 by {(size - SIZE_LIMIT) / 1e6:.2f} MB"
    shown = "n/a" if diff is None else f"{diff:.4f}"
    print(f"wrote {out}: {size:,} bytes ({size / 1e6:.2f} MB, {verdict}); fp16 vs fp32 max |diff| {shown}")
    zoo_name = args.zoo_name or preset
    print(f"zoo entry {zoo_name!r}:  sha256=\"{sha}\",  size={size:_},")
    if args.patch_zoo:
        zoo = dm.REPO / "src" / "iqpfr" / "weights" / "zoo.py"
        print(f"patched {zoo}" if patch_zoo(zoo, zoo_name, sha, size) else
              f"could not find an embedded entry {zoo_name!r} in {zoo}; paste the line above")
    # next to the weights unless they go into the package (the record stays out of the wheel)
    dm.write_json(dm.REPO / "runs" / f"{preset}_final.json" if out.parent == WEIGHTS_DIR else
                  out.with_name(out.stem + ".finalize.json"),
                  {"file": str(out), "bytes": size, "sha256": sha, "fp16_max_abs_diff": diff,
                   "config": str(args.config or (DEFAULT_CONFIG if args.weights is None else "")),
                   "source": str(args.weights or args.shards)})
    if not args.no_sheet:
        from contact_sheet import contact_sheet

        sheet_path = args.sheet or dm.REPO / "docs" / f"{preset}_contact_sheet.png"
        sheet = contact_sheet(load_model(out), sheet_path, args.shared_data, tile_size=args.tile, limit=args.limit)
        print(f"contact sheet: {sheet} ({sheet.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
