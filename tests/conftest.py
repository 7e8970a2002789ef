"""Shared fixtures. ``../shared`` (reference data) exists in CI but not in a user's clone:
tests that need it skip with a clear reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IQPFR_SHARED", ROOT.parent / "shared"))

# 2 CPU cores in CI: keep torch from oversubscribing them
torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_path(*parts: str) -> Path:
    """A path inside ../shared, skipping the calling test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (reference data, present in CI only)")
    return path


@pytest.fixture
def shared_dir() -> Path:
    return shared_path()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # never touch the user's real weight cache from tests
    monkeypatch.setenv("IQPFR_HOME", str(tmp_path_factory.mktemp("iqpfr_home")))
    # a user's offline setting must not change what the tests see: they serve their own files on
    # localhost, and tests of offline mode set it themselves
    for name in ("IQPFR_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
