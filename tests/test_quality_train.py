"""`iqpfr iqa train` end to end on a few synthetic faces (tiny config, CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqpfr.cli import main

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "iqa_face.yaml")


def test_train_cli_writes_loadable_weights(tmp_path, capsys):
    rng = np.random.default_rng(0)
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(5):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(faces / f"{i:05d}.png")
    out = tmp_path / "run"
    rc = main(["iqa", "train", CONFIG,
               "--set", f"train_dirs=[{faces}]", "--set", "holdout=1", "--set", "input_size=64",
               "--set", "crop=32", "--set", "faces_per_step=2", "--set", "reuse_faces=1", "--set", "steps=3",
               "--set", "widths=[8,8,8,8]", "--set", "stem_width=8", "--set", "head_width=8",
               "--set", f"output={out}", "--set", "log_every=1"])
    assert rc == 0
    log = capsys.readouterr().out
    assert "training on 4 faces; held out 1 (00004.png..00004.png)" in log and "step 3" in log

    from iqpfr.quality import create_scorer

    scorer = create_scorer("face-iqa", weights=out / "face_quality.safetensors")
    assert scorer.input_size == 64 and scorer.metadata["steps"] == "3"
    assert scorer.score(torch.rand(2, 3, 100, 100)).shape == (2,)
    # a second run resumes from the checkpoint instead of starting over
    rc = main(["iqa", "train", CONFIG, "--set", f"train_dirs=[{faces}]", "--set", "holdout=1",
               "--set", "input_size=64", "--set", "crop=32", "--set", "faces_per_step=2", "--set", "reuse_faces=1",
               "--set", "steps=4", "--set", "widths=[8,8,8,8]", "--set", "stem_width=8", "--set", "head_width=8",
               "--set", f"output={out}"])
    assert rc == 0 and "resumed from" in capsys.readouterr().out


def test_train_cli_rejects_unknown_key(capsys):
    assert main(["iqa", "train", CONFIG, "--set", "nosuchkey=1"]) == 2
    assert "nosuchkey" in capsys.readouterr().err
