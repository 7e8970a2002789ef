"""The README's "train your own" path end to end at tiny scale, through real `iqpfr` processes:
score faces -> stages I, II, III (tiny configs, a few steps each) -> restore with the run's weights
-> `iqpfr eval` against GT -> ONNX export with --check. Each hand-over is checked on the files
themselves, so a stage that silently ignored its predecessor's weights fails here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 12, 2
LR = 1.0e-3  # configs/tiny/stage*.yaml


def iqpfr(*args: object, cwd: Path, timeout: float = 120) -> str:
    """Run ``python -m iqpfr ARGS`` in a fresh process (one thread); return stdout, fail with stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "iqpfr", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    print(f"iqpfr {args[0]}: {time.perf_counter() - t0:.1f} s")  # shown with pytest -s
    assert proc.returncode == 0, f"iqpfr {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


def tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return load_file(str(path)), meta


def same_part(a: dict, b: dict, prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    return bool(keys) and all(k in b and torch.equal(a[k], b[k]) for k in keys)


def test_train_your_own_end_to_end(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export check needs onnxruntime (the onnx extra)")
    source = shared_path("data", "ffhq_train256")
    names = sorted(p.name for p in source.iterdir() if p.suffix == ".jpg")[: N_TRAIN + N_TEST]
    faces, held = tmp_path / "faces", tmp_path / "held_out"
    faces.mkdir()
    held.mkdir()
    for i, name in enumerate(names):
        shutil.copy(source / name, (faces if i < N_TRAIN else held) / name)

    # 0. scores of the training faces (the condition and the HQ+ split)
    scores = tmp_path / "scores.csv"
    iqpfr("score", faces, "-o", scores, "--no-hist", cwd=tmp_path)
    rows = scores.read_text().splitlines()
    assert rows[0].split(",")[-1] == "score" and len(rows) == N_TRAIN + 1

    # 1-3. the three stages, each started from the files the previous one wrote
    tiny = ROOT / "configs" / "tiny"
    common = ["--no-progress", "--set", f"data.folders=[{faces}]", "--set", f"data.scores_csv={scores}",
              "--set", "data.default_score=null"]
    r1, r2, r3 = (tmp_path / f"stage{i}" for i in (1, 2, 3))
    iqpfr("train", tiny / "stage1.yaml", *common, "--set", f"run_dir={r1}", "--set", "total_steps=4", cwd=tmp_path)
    s1_ckpt = sorted((r1 / "checkpoints").glob("step_*.pt"))[-1]
    iqpfr("train", tiny / "stage2.yaml", *common, "--set", f"run_dir={r2}", "--set", "total_steps=4",
          "--set", f"model.init={r1 / 'model_ema.safetensors'}", cwd=tmp_path)
    s3_steps = 6  # tiny stage3: image steps with w = 1 and the GAN from step 6
    iqpfr("train", tiny / "stage3.yaml", *common, "--set", f"run_dir={r3}", "--set", f"total_steps={s3_steps}",
          "--set", f"model.init={r2 / 'model_ema.safetensors'}", "--set", f"model.vqgan={r1 / 'model_ema.safetensors'}",
          "--set", f"model.init_discriminator={s1_ckpt}", cwd=tmp_path)

    w1, m1 = tensors(r1 / "model_ema.safetensors")
    w2, m2 = tensors(r2 / "model_ema.safetensors")
    w3, m3 = tensors(r3 / "model_ema.safetensors")
    assert (m1["stage"], m2["stage"], m3["stage"]) == ("1", "2", "3")
    # I -> II -> III: codebooks and generator are frozen after stage I, so they must be its tensors exactly
    for part in ("quantize.", "generator."):
        assert same_part(w1, w2, part), f"stage II did not start from stage I's {part}*"
        assert same_part(w1, w3, part), f"stage III did not keep stage I's {part}*"
    # II -> III: the Transformer and the quality embedding continue from stage II (Adam moves a
    # weight by about lr per step; a fresh initialisation would be ~0.1-1 away), and did train
    for prefix in ("ft_layers.", "quality_embed."):
        keys = [k for k in w2 if k.startswith(prefix)]
        assert keys
        drift = max(float((w3[k] - w2[k]).abs().max()) for k in keys)
        assert 0 < drift < 10 * s3_steps * LR, f"stage III's {prefix}* is {drift} away from stage II's"
    assert json.loads(m3["train_config"])["model"]["init"] == str(r2 / "model_ema.safetensors")

    # 4. restore degraded copies of held-out faces with the run's weights, and a whole photo
    testset = tmp_path / "testset"
    iqpfr("make-testset", held, "-o", testset, "--size", 128, "--protocol", "large", cwd=tmp_path)
    restored = tmp_path / "restored"
    iqpfr("restore", testset / "lq", "--aligned", "--weights", r3 / "model_ema.safetensors", "-w", "0.5",
          "--no-face-upsample", "-o", restored, "-q", cwd=tmp_path)
    faces_out = sorted((restored / "restored_faces").glob("*.png"))
    assert len(faces_out) == N_TEST
    photo_out = tmp_path / "photo_out"
    report = tmp_path / "photo.json"
    iqpfr("restore", held / names[-1], "--weights", r3 / "model_ema.safetensors", "--quality-target", "0.9",
          "--no-face-upsample", "-o", photo_out, "--json", report, "-q", cwd=tmp_path)
    assert list((photo_out / "final_results").glob("*")), "no restored photo written"

    # 5. metrics of the restored faces against GT
    results = tmp_path / "eval.csv"
    iqpfr("eval", "--pred", restored / "restored_faces", "--gt", testset / "gt", "--metrics", "psnr,ssim",
          "--resize-to-gt", "--no-plots", "-o", results, cwd=tmp_path)
    summary = json.loads(results.with_suffix(".summary.json").read_text())
    text = json.dumps(summary)
    assert "psnr" in text and "ssim" in text
    lines = results.read_text().splitlines()
    assert len(lines) == N_TEST + 1, lines

    # 6. ONNX export of the trained network, checked against PyTorch in onnxruntime
    onnx_file = tmp_path / "model.onnx"
    out = iqpfr("export", "onnx", r3 / "model_ema.safetensors", "-o", onnx_file, "--check", cwd=tmp_path)
    assert onnx_file.is_file() and "OK" in out, out
