"""The page's private folder: every upload, example copy and result lives inside it.

``PrivateFolder()`` makes a fresh ``iqpfr-demo-*`` folder (mode 0700) in the system temp folder;
Gradio is pointed at it (``GRADIO_TEMP_DIR``), so uploads land there and only files under it are
served. ``remove()`` deletes it (also at interpreter exit); files older than ``max_age_s`` are
swept while the page runs. ``inside(path)`` is the check every path coming from the page passes
before it is read: nothing outside the folder can be read or written through the page.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path


class OutsideFolderError(PermissionError):
    """A path from the page that points outside the private folder."""


class PrivateFolder:
    """A temporary folder only this user can read, removed on ``remove()`` or at exit."""

    def __init__(self, parent: str | os.PathLike | None = None, *, max_age_s: float = 3600.0):
        self.root = Path(tempfile.mkdtemp(prefix="iqpfr-demo-", dir=parent)).resolve()
        os.chmod(self.root, 0o700)
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        atexit.register(self.remove)

    def __enter__(self) -> PrivateFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def point_gradio_here(self) -> None:
        """Make Gradio keep uploads and its file cache in this folder (read when files are saved)."""
        os.environ["GRADIO_TEMP_DIR"] = str(self.root)

    def inside(self, path: str | os.PathLike) -> Path:
        """``path`` resolved (links followed) if it lies inside the folder, else OutsideFolderError."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root):
            raise OutsideFolderError(f"{Path(path).name}: not an upload of this page")
        return resolved

    def new_job_folder(self) -> Path:
        """A fresh sub-folder for one request's results."""
        folder = self.root / "results" / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True, mode=0o700)
        return folder

    def copy_in(self, source: str | os.PathLike, name: str | None = None) -> Path:
        """Copy a file shipped with the package (the example) into the folder; returns the copy."""
        target = self.root / "examples" / (name or Path(source).name)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(source, target)
        return target

    def sweep(self) -> int:
        """Delete files older than ``max_age_s`` (the shipped example's copy stays); returns how many."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - self.max_age_s
        examples = self.root / "examples"
        removed = 0
        with self._lock:
            for path in self.root.rglob("*"):
                try:
                    if path.is_file() and not path.is_relative_to(examples) and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError:  # a file Gradio is still moving: next sweep
                    continue
        return removed

    def remove(self) -> None:
        """Delete the folder and everything in it (idempotent)."""
        with self._lock:
            shutil.rmtree(self.root, ignore_errors=True)
