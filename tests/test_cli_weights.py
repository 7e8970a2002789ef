"""`iqpfr weights ...` and `iqpfr doctor` through the CLI entry point (in-process + one subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from iqpfr.cli import main
from iqpfr.weights import weights_dir
from iqpfr.weights import zoo as zoo_module
from weights_server import make_entry, payload, serve

DATA = payload(100_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def entry(monkeypatch):
    """A zoo entry served by a local HTTP server."""
    with serve({"/f.bin": DATA}) as (url, hits):
        entry = make_entry("t-cli", (f"{url}/f.bin",), SHA, size=len(DATA))
        monkeypatch.setitem(zoo_module.ZOO, entry.name, entry)
        yield entry, hits


def test_list_shows_names_licences_and_cache(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "codeformer" in out and "gfpgan-v1.4" in out and "S-Lab" in out
    assert str(weights_dir()) in out
    assert main(["weights", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["status"] for r in rows}["codeformer"] == "missing"


def test_download_then_path(entry, capsys):
    entry, hits = entry
    assert main(["weights", "path", entry.name]) == 1
    assert main(["weights", "download", entry.name]) == 0
    out = capsys.readouterr().out
    target = weights_dir() / entry.filename
    assert str(target) in out and "test licence" in out
    assert target.read_bytes() == DATA
    assert main(["weights", "path", entry.name]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert hits["/f.bin"] == 1


def test_download_offline_prints_placement_and_fails(entry, capsys, tmp_path):
    entry, hits = entry
    cache = tmp_path / "cache"
    assert main(["weights", "download", entry.name, "--offline", "--cache-dir", str(cache)]) != 0
    err = capsys.readouterr().err
    assert str(cache / entry.filename) in err and SHA in err
    assert sum(hits.values()) == 0 and not cache.exists()


def test_download_unknown_name_fails_but_others_continue(entry, capsys):
    entry, _ = entry
    assert main(["weights", "download", "no-such-model", entry.name]) == 1
    captured = capsys.readouterr()
    assert "no-such-model" in captured.err and entry.name in captured.out
    assert (weights_dir() / entry.filename).is_file()


def test_verify_refuses_altered_bytes(tmp_path, capsys, entry):
    entry, _ = entry
    path = tmp_path / "w.bin"
    path.write_bytes(DATA)
    assert main(["weights", "verify", str(path), "--sha256", SHA]) == 0
    assert main(["weights", "verify", str(path), "--name", entry.name]) == 0
    altered = bytearray(DATA)
    altered[-1] ^= 0x40
    path.write_bytes(bytes(altered))
    capsys.readouterr()
    assert main(["weights", "verify", str(path), "--sha256", SHA]) == 1
    assert "MISMATCH" in capsys.readouterr().err
    assert main(["weights", "verify", str(path), "--name", entry.name]) == 1
    # no reference hash at all is an error, not a pass
    assert main(["weights", "verify", str(path)]) == 2
    assert main(["weights", "verify", str(tmp_path / "missing.pth"), "--sha256", SHA]) == 2


def test_convert_cli(tmp_path, capsys):
    gen = torch.Generator().manual_seed(1)
    state = {
        "conv_body_first.weight": torch.randn(4, 3, 1, 1, generator=gen),
        "stylegan_decoder.constant_input.weight": torch.randn(1, 4, 4, 4, generator=gen),
        "final_linear.weight": torch.randn(8, 16, generator=gen),
    }
    src = tmp_path / "GFPGANfake.pth"
    torch.save({"params_ema": state}, src)
    assert main(["weights", "convert", str(src)]) == 0
    out_dir = tmp_path / "GFPGANfake"
    config = json.loads((out_dir / "config.json").read_text())
    assert (
        config["architecture"] == "gfpgan-v1.4"
        and config["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    )
    from safetensors.torch import load_file

    loaded = load_file(str(out_dir / "model.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # existing output is kept; a missing input is a one-line error
    assert main(["weights", "convert", str(src)]) == 2
    assert main(["weights", "convert", str(tmp_path / "none.pth")]) == 2
    assert "none.pth" in capsys.readouterr().err


def test_download_to_safetensors(monkeypatch, tmp_path):
    import io

    from iqpfr.models.factory import create_model
    from iqpfr.weights.checkpoint import load_model

    state = create_model("gfpgan-tiny").state_dict()
    buffer = io.BytesIO()
    torch.save({"params_ema": state}, buffer)
    blob = buffer.getvalue()
    with serve({"/g.pth": blob}) as (url, _):
        entry = make_entry(
            "t-gfp",
            (f"{url}/g.pth",),
            hashlib.sha256(blob).hexdigest(),
            kind="restoration",
            architecture="gfpgan-tiny",
        )
        monkeypatch.setitem(zoo_module.ZOO, entry.name, entry)
        assert main(["weights", "download", entry.name, "--to", "safetensors"]) == 0
    model = load_model(weights_dir() / "t-gfp" / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_doctor_json(capsys):
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["torch"]["version"] == torch.__version__
    assert report["weights"]["cache"] == str(weights_dir())
    assert {f["name"] for f in report["weights"]["files"]} >= {"codeformer", "gfpgan-v1.4"}
    assert "onnxruntime" in report["extras"]
    kernels = report["cpu_kernels"]  # reported, never built by doctor (IQPFR_HOME is a fresh folder here)
    assert kernels["built"] is False and kernels["build_directory"].startswith(str(weights_dir().parent))


def test_doctor_flags_corrupt_cached_file(capsys):
    target = weights_dir() / zoo_module.ZOO["lpips-vgg-v0.1"].filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"truncated")
    assert main(["doctor"]) == 1
    assert "mismatch" in capsys.readouterr().out


def test_console_script_offline_smoke(tmp_path):
    exe = shutil.which("iqpfr")
    cmd = [exe] if exe else [sys.executable, "-m", "iqpfr"]
    env = {**os.environ, "IQPFR_HOME": str(tmp_path), "IQPFR_OFFLINE": "1"}
    proc = subprocess.run(
        [*cmd, "weights", "download", "codeformer"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode != 0
    assert str(tmp_path / "weights" / "codeformer.pth") in proc.stderr
    assert zoo_module.ZOO["codeformer"].sha256 in proc.stderr
    assert list(tmp_path.iterdir()) == []
