"""Weights API: zoo table, cache, sha256-checked downloads from a local server, conversion."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from iqpfr.weights import (
    ZOO,
    HashMismatchError,
    UnknownWeightsError,
    UnverifiedWeightsError,
    WeightsUnavailableError,
    cached_path,
    download,
    resolve_weights,
    sha256_file,
    verify,
    weights_dir,
)
from iqpfr.weights import zoo as zoo_module
from iqpfr.weights.convert import convert_checkpoint, match_preset
from weights_server import make_entry, payload, serve

DATA = payload()
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    with serve({"/w/file.bin": DATA, "/w/other.bin": DATA[::-1]}) as (url, hits):
        yield url, hits


def _register(monkeypatch, entry):
    monkeypatch.setitem(zoo_module.ZOO, entry.name, entry)
    return entry


def _leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` apart from the (empty, reusable) download lock files."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- zoo table ---------------------------------------------------------------------------------


def test_zoo_entries_are_consistent():
    filenames = [e.filename for e in ZOO.values()]
    assert len(filenames) == len(set(filenames)), "cache file names must be unique"
    for entry in ZOO.values():
        assert entry.licence, entry.name
        assert all(u.startswith("https://") for u in entry.urls), entry.name
        if entry.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.name
    # the two official releases are pinned, downloadable and map to create_model presets
    for name, arch in (("codeformer", "codeformer"), ("gfpgan-v1.4", "gfpgan-v1.4")):
        entry = ZOO[name]
        assert entry.sha256 and entry.urls and entry.architecture == arch and entry.size
    assert "non-commercial" in ZOO["codeformer"].licence


def test_architectures_name_factory_presets():
    factory = pytest.importorskip("iqpfr.models.factory")
    from iqpfr.models.rrdbnet import SR_ARCHITECTURES

    for entry in ZOO.values():
        if entry.architecture is None:
            continue
        if entry.kind == "upsampling":  # super-resolution networks have their own table
            assert entry.architecture in SR_ARCHITECTURES, entry.name
        else:
            assert entry.architecture in factory.PRESETS, entry.name


# --- hashing -----------------------------------------------------------------------------------


def test_sha256_and_verify(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(DATA)
    assert sha256_file(path) == SHA
    assert verify(path, SHA) and verify(path, SHA.upper())
    altered = bytearray(DATA)
    altered[12345] ^= 1
    path.write_bytes(bytes(altered))
    assert not verify(path, SHA)


# --- downloads ---------------------------------------------------------------------------------


def test_download_verifies_and_caches(server, monkeypatch, tmp_path):
    url, hits = server
    entry = _register(monkeypatch, make_entry("t-ok", (f"{url}/w/file.bin",), SHA))
    monkeypatch.chdir(tmp_path)  # nothing may be written to the working directory
    path = download(entry.name, progress=False)
    assert path == weights_dir() / "t-ok.bin"
    assert path.read_bytes() == DATA
    assert not path.with_name("t-ok.bin.part").exists()
    # cached and verified: no second request, also via resolve_weights and offline
    assert resolve_weights(entry.name) == path
    assert resolve_weights(entry.name, offline=True) == path
    assert hits["/w/file.bin"] == 1
    assert list(tmp_path.iterdir()) == []


def test_wrong_sha256_is_refused_and_nothing_is_left(server, monkeypatch):
    url, _ = server
    entry = _register(monkeypatch, make_entry("t-bad", (f"{url}/w/other.bin",), SHA))
    with pytest.raises(HashMismatchError, match=SHA):
        download(entry.name, progress=False)
    assert _leftovers(weights_dir()) == []


def test_truncated_transfer_leaves_no_part_file(server, monkeypatch):
    url, hits = server
    entry = _register(monkeypatch, make_entry("t-cut", (f"{url}/truncated/w/file.bin",), SHA))
    with pytest.raises(WeightsUnavailableError):
        download(entry.name, progress=False, timeout=5)
    assert hits["/truncated/w/file.bin"] == 1
    assert _leftovers(weights_dir()) == []


def test_concurrent_downloads_fetch_once(server, monkeypatch):
    url, hits = server
    entry = _register(monkeypatch, make_entry("t-race", (f"{url}/w/file.bin",), SHA))
    with ThreadPoolExecutor(max_workers=3) as pool:
        paths = list(pool.map(lambda _: download(entry.name, progress=False), range(3)))
    assert len(set(paths)) == 1 and paths[0].read_bytes() == DATA
    assert hits["/w/file.bin"] == 1
    assert _leftovers(weights_dir()) == [".t-race.bin.sha256", "t-race.bin"]


def test_mirror_is_used_when_primary_fails(server, monkeypatch):
    url, hits = server
    entry = _register(monkeypatch, make_entry("t-mirror", (f"{url}/missing.bin", f"{url}/w/file.bin"), SHA))
    assert download(entry.name, progress=False).read_bytes() == DATA
    assert hits["/missing.bin"] == 1 and hits["/w/file.bin"] == 1


def test_corrupt_cached_file_is_replaced_only_by_a_verified_download(server, monkeypatch):
    url, _ = server
    entry = _register(monkeypatch, make_entry("t-fix", (f"{url}/w/file.bin",), SHA))
    target = weights_dir() / entry.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(DATA[:1000])  # an earlier truncated download
    with pytest.raises(WeightsUnavailableError, match="wrong sha256"):
        download(entry.name, offline=True)
    assert target.read_bytes() == DATA[:1000]  # kept while no good copy exists
    assert download(entry.name, progress=False).read_bytes() == DATA


@pytest.mark.parametrize("how", ["argument", "IQPFR_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_says_which_file_to_put_where(server, monkeypatch, how):
    url, hits = server
    entry = _register(monkeypatch, make_entry("t-off", (f"{url}/w/file.bin",), SHA, size=len(DATA)))
    if how != "argument":
        monkeypatch.setenv(how, "1")
    with pytest.raises(WeightsUnavailableError) as info:
        download(entry.name, offline=how == "argument")
    message = str(info.value)
    assert str(weights_dir() / "t-off.bin") in message and SHA in message and f"{url}/w/file.bin" in message
    assert sum(hits.values()) == 0


def test_unreachable_host_gives_the_same_instructions(monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/file.bin"
    entry = _register(monkeypatch, make_entry("t-down", (url,), SHA))
    with pytest.raises(WeightsUnavailableError) as info:
        download(entry.name, timeout=2)
    assert str(weights_dir() / "t-down.bin") in str(info.value) and SHA in str(info.value)
    assert _leftovers(weights_dir()) == []


def test_unpinned_file_needs_explicit_trust(server, monkeypatch):
    url, hits = server
    entry = _register(monkeypatch, make_entry("t-free", (f"{url}/w/file.bin",), None))
    with pytest.raises(UnverifiedWeightsError, match="no-verify"):
        download(entry.name)
    assert sum(hits.values()) == 0
    path = download(entry.name, allow_unverified=True, progress=False)
    assert path.read_bytes() == DATA
    with pytest.raises(UnverifiedWeightsError):
        resolve_weights(entry.name)


def test_non_http_urls_are_refused(tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    entry = _register(monkeypatch, make_entry("t-file", (src.as_uri(),), SHA))
    with pytest.raises(WeightsUnavailableError, match="http/https only"):
        download(entry.name)


def test_cache_dir_argument_and_env(server, monkeypatch, tmp_path):
    url, _ = server
    entry = _register(monkeypatch, make_entry("t-dir", (f"{url}/w/file.bin",), SHA))
    assert download(entry.name, cache_dir=tmp_path / "c", progress=False) == tmp_path / "c" / "t-dir.bin"
    monkeypatch.setenv("IQPFR_HOME", str(tmp_path / "home"))
    assert cached_path(entry.name) == tmp_path / "home" / "weights" / "t-dir.bin"


# --- resolve_weights ---------------------------------------------------------------------------


def test_resolve_paths_and_names(tmp_path):
    file = tmp_path / "m.safetensors"
    file.write_bytes(b"x")
    assert resolve_weights(file) == file
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert resolve_weights(tmp_path) == tmp_path / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resolve_weights(tmp_path / "nope.pth")
    with pytest.raises(UnknownWeightsError, match="codeformer"):
        resolve_weights("no-such-model")


def test_embedded_entries_resolve_inside_the_package():
    import iqpfr

    path = cached_path("iqpfr-256")
    assert path.parent == Path(iqpfr.__file__).parent / "weights"
    if path.is_file():
        assert resolve_weights("iqpfr-256") == path
    else:
        with pytest.raises(WeightsUnavailableError, match="not part of this installation"):
            resolve_weights("iqpfr-256")


# --- conversion --------------------------------------------------------------------------------


def _tiny_state_dict(preset: str) -> dict[str, torch.Tensor]:
    from iqpfr.models.factory import create_model

    torch.manual_seed(0)
    return create_model(preset).state_dict()


@pytest.mark.parametrize("preset", ["codeformer-tiny", "gfpgan-tiny"])
def test_convert_round_trip(tmp_path, preset):
    from iqpfr.weights.checkpoint import load_model, load_state_dict_file, read_model_config

    state = _tiny_state_dict(preset)
    src = tmp_path / "official.pth"
    torch.save({"params_ema": state, "params": {k: v + 1 for k, v in state.items()}}, src)
    weights, config_path = convert_checkpoint(src, tmp_path / "out")
    assert weights == tmp_path / "out" / "model.safetensors"
    loaded = load_state_dict_file(weights)
    assert loaded.keys() == state.keys()
    for k in state:
        assert torch.equal(loaded[k], state[k]), k  # params_ema, not params
    config = json.loads(config_path.read_text())
    assert config == read_model_config(weights)
    assert config["architecture"] == preset  # recognised from the shapes
    assert config["source_sha256"] == sha256_file(src)
    # the converted file alone rebuilds the model
    model = load_model(weights)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
    with pytest.raises(FileExistsError):
        convert_checkpoint(src, tmp_path / "out")


def test_convert_plain_state_dict_to_file(tmp_path):
    from iqpfr.weights.checkpoint import read_model_config

    src = tmp_path / "plain.pth"
    torch.save(_tiny_state_dict("gfpgan-tiny"), src)
    weights, config_path = convert_checkpoint(src, tmp_path / "g.safetensors", architecture="gfpgan-tiny")
    assert config_path == tmp_path / "g.json"
    assert read_model_config(weights)["architecture"] == "gfpgan-tiny"


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_convert_refuses_pickles_that_need_code(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({"params_ema": {"w": torch.zeros(1)}, "x": _Evil()}, src)
    with pytest.raises(ValueError, match="weights-only"):
        convert_checkpoint(src)
    assert not (tmp_path / "evil").exists()


def test_unknown_layout_asks_for_arch(tmp_path):
    src = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(2, 3, 3, 3), "classifier.weight": torch.zeros(4, 2)}, src)
    with pytest.raises(ValueError, match="--arch"):
        convert_checkpoint(src)
    assert not (tmp_path / "vgg").exists()


@pytest.mark.parametrize(("fixture", "preset"), [("codeformer", "codeformer"), ("gfpgan", "gfpgan-v1.4")])
def test_official_layouts_are_recognised(fixture, preset):
    """The released checkpoints' key/shape lists (conformance manifests) map to the right preset."""
    from conftest import shared_path

    manifest = json.loads(shared_path("conformance", fixture, "manifest.json").read_text())
    state = {t["key"]: torch.empty(t["shape"], device="meta") for t in manifest["weights"]["state_dict"]}
    assert match_preset(state) == preset
