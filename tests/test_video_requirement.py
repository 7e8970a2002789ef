"""The video extra's requirement is checked where PyAV is imported: a missing or too old PyAV (the
frame rotation API arrived in 18) gives one sentence that says what to install, not an AttributeError
in the middle of a clip. Runs without PyAV: the module is faked."""

from __future__ import annotations

import sys
import types

import pytest

from iqpfr.video.io import MIN_PYAV, VideoUnavailable, import_av


def fake_av(version: str) -> types.ModuleType:
    module = types.ModuleType("av")
    module.__version__ = version
    return module


@pytest.mark.parametrize("version", ["17.0.0", "9.2.0", "17.0.1.dev0"])
def test_old_pyav_is_refused_with_the_upgrade_line(monkeypatch, version):
    monkeypatch.setitem(sys.modules, "av", fake_av(version))
    with pytest.raises(VideoUnavailable) as info:
        import_av()
    message = str(info.value)
    assert f"found {version}" in message and f"av>={MIN_PYAV[0]}" in message and "\n" not in message


@pytest.mark.parametrize("version", ["18.0.0", "18.1.0", "19.0.0rc1", "20"])
def test_new_enough_pyav_is_returned(monkeypatch, version):
    module = fake_av(version)
    monkeypatch.setitem(sys.modules, "av", module)
    assert import_av() is module


def test_missing_pyav_names_the_extra_and_the_python_it_needs(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(VideoUnavailable) as info:
        import_av()
    message = str(info.value)
    assert "pip install 'iqpfr[video]'" in message
    assert ("Python >= 3.11" in message) == (sys.version_info < (3, 11))
