"""``iqpfr demo`` without a browser: the CLI's defaults, limits, the private folder, the models on
offer and the engine's one-sentence errors (the page and its API both go through the engine)."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqpfr.demo.limits import LimitError, Limits
from iqpfr.demo.settings import FACE_SELECTIONS, PageDefaults, cli_default, model_capabilities, model_choices
from iqpfr.demo.uploads import OutsideFolderError, PrivateFolder

ASTRONAUT = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))


def test_page_defaults_are_the_cli_defaults():
    from iqpfr.cli import build_parser

    args = build_parser().parse_args(["restore", "x.jpg"])
    defaults = PageDefaults.from_cli()
    assert defaults.fidelity == args.fidelity == "auto"
    assert defaults.upscale == args.upscale
    assert defaults.detector == args.detector
    assert defaults.color_fix == args.color_fix
    assert defaults.grayscale == args.grayscale
    assert defaults.bg_upsampler == args.bg_upsampler
    assert (defaults.bg_tile, defaults.bg_tile_overlap) == (args.bg_tile, args.bg_tile_overlap)
    assert defaults.face_selection == FACE_SELECTIONS[0] and not args.only_center_face and not args.largest_face
    assert cli_default("face_upsample") is None  # "the model's default": the engine asks the restorer


def test_demo_command_is_registered_and_light():
    import subprocess
    import sys

    code = ("import sys; from iqpfr.cli import build_parser; p = build_parser(); "
            "a = p.parse_args(['demo']); print(a.host, a.port); "
            "print('gradio' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["127.0.0.1", "7860"]
    assert out[2] == "False"  # the page's dependency is imported only when the page starts


def test_limits_refuse_with_a_sentence():
    limits = Limits(max_side=100, max_output_side=150, max_files=2)
    limits.check_size("ok.png", 100, 60, 1.5)
    with pytest.raises(LimitError, match=r"big\.png is 101 x 10 px; this page takes photos up to 100 px"):
        limits.check_size("big.png", 101, 10, 1.0)
    with pytest.raises(LimitError, match=r"x2 would make it 200 x 120 px"):
        limits.check_size("up.png", 100, 60, 2.0)
    with pytest.raises(LimitError, match="at most 2 per run"):
        limits.check_count(3)
    with pytest.raises(LimitError, match="No photo given"):
        limits.check_count(0)
    assert "100 px on the longest side" in limits.describe()


def test_private_folder_keeps_paths_inside_and_is_removed(tmp_path):
    folder = PrivateFolder(tmp_path)
    assert oct(folder.root.stat().st_mode & 0o777) == "0o700"
    inner = folder.root / "upload" / "a.png"
    inner.parent.mkdir()
    inner.write_bytes(b"x")
    assert folder.inside(inner) == inner.resolve()
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    with pytest.raises(OutsideFolderError, match="secret.txt: not an upload of this page"):
        folder.inside(outside)
    with pytest.raises(OutsideFolderError):
        folder.inside(folder.root / ".." / "secret.txt")
    link = folder.root / "link.txt"
    link.symlink_to(outside)  # a link inside pointing out is still outside
    with pytest.raises(OutsideFolderError):
        folder.inside(link)
    old = folder.new_job_folder() / "old.png"
    old.write_bytes(b"x")
    example = folder.copy_in(ASTRONAUT)
    os.utime(old, (1, 1))
    os.utime(example, (1, 1))
    assert folder.sweep() == 1 and not old.exists() and example.exists()
    folder.remove()
    assert not folder.root.exists() and outside.read_text() == "secret"


def test_model_menu_offers_only_present_files(tmp_path, monkeypatch):
    from iqpfr.weights import cached_path

    choices = model_choices()
    assert choices[0].weights is None and "default" in choices[0].label
    assert all(c.kind != "zoo" or "codeformer" not in c.label for c in choices)
    corrupt = cached_path("codeformer")  # IQPFR_HOME is a fresh folder per test
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(b"not the codeformer weights")
    assert not any(c.weights == "codeformer" for c in model_choices())  # a corrupt file is not offered
    extra = tmp_path / "mine.safetensors"
    extra.write_bytes(b"")
    assert model_choices([extra])[-1].label == "mine.safetensors (file given at start)"


def test_model_capabilities_follow_the_architecture():
    from iqpfr.models.factory import create_model

    assert model_capabilities(create_model("iqpfr-tiny")) == {"fidelity": True, "quality": True}
    assert model_capabilities(create_model("codeformer-tiny")) == {"fidelity": True, "quality": False}
    assert model_capabilities(create_model("gfpgan-tiny")) == {"fidelity": False, "quality": False}


# --------------------------------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    pytest.importorskip("dlib")
    import torch

    from iqpfr.demo.engine import DemoEngine

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = PrivateFolder(tmp_path_factory.mktemp("demo"))
    yield DemoEngine(folder, Limits(max_side=600, max_output_side=1200), device="cpu")
    folder.remove()
    torch.set_num_threads(previous)


def test_engine_options_are_the_cli_options(engine):
    from iqpfr.cli import build_parser
    from iqpfr.cli.restore import RestoreCommand
    from iqpfr.demo.engine import Settings

    restorer = engine.restorer()
    options = engine.options(Settings(), restorer)
    cli = RestoreCommand(build_parser().parse_args(["restore", "x.jpg"]))
    assert options.fidelity == cli.fidelities[0] == "auto"
    assert options.upscale == cli.args.upscale and options.color_fix == cli.args.color_fix
    assert options.face_upsample == restorer.default_face_upsample()  # the CLI's rule for face_upsample=None
    assert options.face_filter.max_faces == engine.limits.max_faces
    assert engine.options(Settings(fidelity="0.25"), restorer).fidelity == 0.25


def test_engine_errors_are_one_sentence_naming_the_upload(engine, tmp_path):
    from iqpfr.demo.engine import DemoError, Settings

    root = engine.folder.root / "uploads"
    root.mkdir(exist_ok=True)
    broken = root / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    big = root / "big.png"
    Image.fromarray(np.zeros((10, 700, 3), np.uint8)).save(big)
    flat = root / "flat.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(flat)
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside)

    results = list(engine.restore([broken, big, flat, outside], Settings(fidelity=0.5, face_upsample=False)))
    errors = [r.error for r in results]
    assert errors[0].startswith("broken.jpg could not be read") and errors[0].endswith(".")
    assert str(engine.folder.root) not in errors[0]
    assert errors[1].startswith("big.png is 700 x 10 px; this page takes photos up to 600 px")
    assert errors[2] is None and results[2].notes == ["No face found in flat.png: the photo is returned unchanged."]
    assert np.array_equal(np.asarray(Image.open(results[2].output)), np.asarray(Image.open(flat)))
    assert errors[3] == "outside.png: not an upload of this page."
    assert all("\n" not in e for e in errors if e)

    with pytest.raises(DemoError, match=r"Fidelity must be in \[0, 1\], got 2"):
        list(engine.restore([flat], Settings(fidelity=2)))
    with pytest.raises(DemoError, match="Unknown model"):
        list(engine.restore([flat], Settings(model="nope")))
    with pytest.raises(DemoError, match="No photo given"):
        list(engine.restore([], Settings()))


def test_engine_restores_like_the_library(engine):
    from iqpfr.demo.engine import Settings

    sample = engine.folder.copy_in(ASTRONAUT)
    (photo,) = engine.restore([sample], Settings(fidelity=0.5, face_upsample=False))
    assert photo.ok and len(photo.faces) == 1 and photo.faces[0].caption() == "face 1: before | after, w 0.50"
    expected = engine.restorer().restore(str(sample), fidelity=0.5, face_upsample=False).image
    assert np.array_equal(np.asarray(Image.open(photo.output)), expected)
    before = np.asarray(Image.open(photo.before))
    assert before.shape == expected.shape and not np.array_equal(before, expected)
    pair = np.asarray(Image.open(photo.faces[0].image))
    assert pair.shape[0] == engine.restorer().face_size and pair.shape[1] > 2 * pair.shape[0]
