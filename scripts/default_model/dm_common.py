"""Helpers shared by the default-model scripts (pack_data, device_train, finalize, acceptance).

Kept next to the scripts (not in the package): they exist only to move a training run through the
device tool's limits (files of at most 16 MiB come back, 8 files a call, 64 MiB a working tree).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("IQPFR_SHARED", REPO.parent / "shared")) / "data"
DATA_DIR_NAME = ".device_data"  # git-ignored, named in `carry`
CKPT_DIR_NAME = ".device_ckpt"  # git-ignored (.git/info/exclude, see README), named in `carry`
MIB = 1 << 20
SHARD_LIMIT = 15 * MIB  # the device returns files of at most 16 MiB; keep a margin
TREE_LIMIT = 64 * MIB  # what travels to the device (checkout + carried paths)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_bytes(path: str | os.PathLike) -> int:
    """Total size of the regular files under ``path`` (0 if it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def checkout_bytes(repo: Path = REPO) -> int:
    """Bytes of what the device tool sends besides carried paths: tracked files plus untracked
    files that git does not ignore (the working-tree copy). Outside a git checkout (an unpacked
    release, a copy) every file below ``repo`` except the usual ignored folders counts: an upper bound."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=repo, capture_output=True, check=True).stdout
        names = {n for n in out.decode().split("\0") if n}
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "runs", DATA_DIR_NAME, CKPT_DIR_NAME, "__pycache__", ".whl"}
        names = {p.relative_to(repo).as_posix() for p in repo.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(repo).parts)}
    total = 0
    for name in names:
        p = repo / name
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def save_sharded(state: dict[str, torch.Tensor], prefix: str | os.PathLike, *, dtype: torch.dtype | None = torch.float16,
                 limit: int = SHARD_LIMIT, metadata: dict[str, str] | None = None) -> list[Path]:
    """Write ``state`` as ``<prefix>-00001-of-0000N.safetensors`` shards of at most ``limit`` bytes
    each (floating tensors cast to ``dtype``; None keeps them). Returns the shard paths in order."""
    from safetensors.torch import save_file

    from iqpfr.utils.fs import atomic_path

    prefix = Path(prefix)
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        t = state[key].detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous().clone()
        nbytes = t.numel() * t.element_size()
        if nbytes > limit - 64 * 1024:
            raise ValueError(f"{key}: one tensor of {nbytes} bytes does not fit a {limit}-byte shard")
        if groups[-1] and size + nbytes > limit - 64 * 1024:  # headroom for the JSON header
            groups.append({})
            size = 0
        groups[-1][key] = t
        size += nbytes
    paths = []
    n = len(groups)
    for i, group in enumerate(groups, 1):
        path = prefix.parent / f"{prefix.name}-{i:05d}-of-{n:05d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(group, str(tmp), metadata={**(metadata or {}), "shard": f"{i}/{n}"})
        paths.append(path)
    return paths


def shard_paths(prefix: str | os.PathLike) -> list[Path]:
    """The complete, ordered shard set of ``prefix`` (raises if a shard is missing)."""
    prefix = Path(prefix)
    found = sorted(prefix.parent.glob(f"{prefix.name}-*-of-*.safetensors"))
    if not found:
        raise FileNotFoundError(f"{prefix}-*-of-*.safetensors: no shards found")
    n = int(found[0].name.rsplit("-of-", 1)[1].split(".")[0])
    expected = [prefix.parent / f"{prefix.name}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    missing = [p.name for p in expected if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{prefix}: shards missing: {', '.join(missing)}")
    return expected


def load_sharded(prefix: str | os.PathLike, dtype: torch.dtype | None = torch.float32) -> dict[str, torch.Tensor]:
    """Merge the shards of ``prefix`` into one state dict (floating tensors cast to ``dtype``)."""
    from safetensors.torch import load_file

    from iqpfr.weights.checkpoint import pop_config_tensor

    state: dict[str, torch.Tensor] = {}
    for path in shard_paths(prefix):
        for k, v in pop_config_tensor(load_file(str(path)))[0].items():
            state[k] = v.to(dtype) if (dtype is not None and v.is_floating_point()) else v
    return state


def write_json(path: str | os.PathLike, obj) -> Path:
    from iqpfr.utils.fs import atomic_write_text

    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
