"""``iqpfr weights {list,download,verify,path,convert}``: the model zoo and the weight cache."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """examples:
  iqpfr weights list                         # every known file, its licence and cache status
  iqpfr weights download codeformer          # fetch + sha256-check into $IQPFR_HOME/weights
  iqpfr weights download codeformer --offline   # only say which file to put where
  iqpfr weights verify ~/Downloads/codeformer.pth --name codeformer
  iqpfr weights path gfpgan-v1.4             # print the cache path (exit 1 if not downloaded)
  iqpfr weights convert codeformer.pth -o codeformer/   # -> model.safetensors + config.json

cache: $IQPFR_HOME (default ~/.cache/iqpfr); offline: --offline, IQPFR_OFFLINE=1 or HF_HUB_OFFLINE=1
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, download, verify and convert model weights",
        description="The model zoo and the weight cache. Every download is checked against a pinned sha256.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="known weights, licences and cache status")
    p.add_argument("--cache-dir", help="weight folder to inspect (default: $IQPFR_HOME/weights)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = actions.add_parser(
        "download",
        help="download weights into the cache (sha256-checked)",
        description="Download zoo files into $IQPFR_HOME/weights through <file>.part, check the pinned "
        "sha256 and rename atomically. Offline (--offline, IQPFR_OFFLINE=1, HF_HUB_OFFLINE=1) nothing is "
        "fetched: missing files are reported with their URL, destination path and sha256 (exit 1).",
        epilog="examples:\n  iqpfr weights download codeformer gfpgan-v1.4\n"
        "  iqpfr weights download --all --cache-dir /data/iqpfr-weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="zoo names (see `iqpfr weights list`)")
    p.add_argument("--all", action="store_true", help="every downloadable entry")
    p.add_argument("--offline", action="store_true", help="no network: report where to place missing files")
    p.add_argument("--cache-dir", help="weight folder (default: $IQPFR_HOME/weights)")
    p.add_argument("--force", action="store_true", help="download again even if a good copy is cached")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="accept files whose zoo entry pins no sha256 (pinned hashes are always checked)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    p.add_argument(
        "--to",
        choices=("pth", "safetensors"),
        default="pth",
        help="safetensors: also convert restoration .pth files to <cache>/<name>/model.safetensors",
    )
    p.set_defaults(func=_download)

    p = actions.add_parser("verify", help="check a file's sha256")
    p.add_argument("path", metavar="PATH")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--sha256", metavar="HEX", help="expected sha256")
    group.add_argument("--name", help="zoo entry whose pinned sha256 is expected")
    p.set_defaults(func=_verify)

    p = actions.add_parser("path", help="print the local path of a zoo entry")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--cache-dir", help="weight folder (default: $IQPFR_HOME/weights)")
    p.set_defaults(func=_path)

    p = actions.add_parser(
        "convert",
        help="official .pth -> .safetensors + config.json",
        description="Convert an official checkpoint (a dict with params_ema or params, read with "
        "torch.load(weights_only=True)) to safetensors; the config (architecture preset, source sha256, "
        "licence) goes into the file's metadata and into config.json.",
        epilog="examples:\n  iqpfr weights convert codeformer.pth                 # -> codeformer/model.safetensors\n"
        "  iqpfr weights convert GFPGANv1.4.pth -o gfpgan.safetensors   # + gfpgan.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", help="checkpoint (.pth with params_ema/params, or .safetensors)")
    p.add_argument(
        "-o", "--out", help="output folder, or a .safetensors file (default: folder named after PATH)"
    )
    p.add_argument("--arch", help="architecture preset name (default: detected from the keys)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_convert)


def _list(args: argparse.Namespace) -> int:
    from iqpfr.weights import ZOO, file_status, weights_dir
    from iqpfr.weights.cache import embedded_path

    rows = []
    for entry in ZOO.values():
        path = embedded_path(entry) if entry.embedded else weights_dir(args.cache_dir) / entry.filename
        status = file_status(entry, path)
        if entry.embedded and status == "unverified":
            status = "embedded"
        rows.append((entry, path, status))
    if args.json:
        out = [
            {
                "name": e.name,
                "file": e.filename,
                "kind": e.kind,
                "architecture": e.architecture,
                "size": e.size,
                "sha256": e.sha256,
                "urls": list(e.urls),
                "embedded": e.embedded,
                "licence": e.licence,
                "notes": e.notes,
                "path": str(path),
                "status": status,
            }
            for e, path, status in rows
        ]
        print(json.dumps(out, indent=2))
        return 0
    header = ("NAME", "KIND", "ARCH", "SIZE", "STATUS", "LICENCE")
    table = [header] + [
        (e.name, e.kind, e.architecture or "-", _size(e.size), status, e.licence) for e, _, status in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print(f"\ncache: {weights_dir(args.cache_dir)}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from iqpfr.cli import CLIError
    from iqpfr.weights import ZOO, WeightsError, download, get_entry

    names = list(args.names)
    if args.all:
        names += [e.name for e in ZOO.values() if e.urls and e.name not in names]
    if not names:
        raise CLIError("name at least one weight (see `iqpfr weights list`) or pass --all")
    failed = 0
    for name in names:
        try:
            entry = get_entry(name)
            if entry.package:  # converted from an installed registry package (iqpfr.weights.realesrgan)
                from iqpfr.weights.realesrgan import resolve_sr_weights

                path = resolve_sr_weights(name, cache_dir=args.cache_dir)
            else:
                path = download(
                    name,
                    cache_dir=args.cache_dir,
                    offline=args.offline,
                    allow_unverified=args.no_verify,
                    force=args.force,
                    timeout=args.timeout,
                )
        except WeightsError as exc:
            failed += 1
            print(f"iqpfr weights download: {exc}", file=sys.stderr)
            continue
        print(f"{name}: {path}")
        if args.to == "safetensors" and entry.architecture and path.suffix != ".safetensors":
            try:
                path = _to_safetensors(path, path.parent / entry.name, entry.architecture)
            except (OSError, ValueError) as exc:
                failed += 1
                print(f"iqpfr weights download: {name}: conversion failed: {exc}", file=sys.stderr)
                continue
            print(f"{name}: {path}")
        print(f"  licence: {entry.licence}")
    return 1 if failed else 0


def _to_safetensors(src, folder, architecture: str):
    from iqpfr.weights.convert import convert_checkpoint

    weights = folder / "model.safetensors"
    if weights.is_file():
        return weights
    return convert_checkpoint(src, folder, architecture=architecture)[0]


def _verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from iqpfr.cli import CLIError
    from iqpfr.weights import WeightsError, get_entry, sha256_file
    from iqpfr.weights.zoo import entry_for_filename

    path = Path(args.path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    if args.sha256:
        expected, source = args.sha256.strip().lower(), "--sha256"
    else:
        try:
            entry = get_entry(args.name) if args.name else entry_for_filename(path.name)
        except WeightsError as exc:
            raise CLIError(str(exc)) from None
        if entry is None:
            raise CLIError(
                f"{path}: sha256 {sha256_file(path)}; no expected hash known (pass --sha256 HEX or --name NAME)"
            )
        if entry.sha256 is None:
            raise CLIError(f"{path}: sha256 {sha256_file(path)}; the zoo pins no hash for {entry.name!r}")
        expected, source = entry.sha256, f"zoo entry {entry.name!r}"
    got = sha256_file(path)
    if got != expected:
        print(f"MISMATCH {path}\n  expected {expected} ({source})\n  got      {got}", file=sys.stderr)
        return 1
    print(f"OK {path} sha256 {got}")
    return 0


def _path(args: argparse.Namespace) -> int:
    from iqpfr.cli import CLIError
    from iqpfr.weights import WeightsError, cached_path

    try:
        path = cached_path(args.name, args.cache_dir)
    except WeightsError as exc:
        raise CLIError(str(exc)) from None
    print(path)
    if not path.is_file():
        print(
            f"iqpfr weights path: {args.name} is not present (run `iqpfr weights download {args.name}`)",
            file=sys.stderr,
        )
        return 1
    return 0


def _convert(args: argparse.Namespace) -> int:
    from iqpfr.cli import CLIError
    from iqpfr.weights.convert import convert_checkpoint

    try:
        weights, config = convert_checkpoint(
            args.path, args.out, architecture=args.arch, overwrite=args.overwrite
        )
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote {weights}\nwrote {config}")
    return 0


def _size(size: int | None) -> str:
    if not size:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "-"
