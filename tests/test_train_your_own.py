"""The README's "Train your own" path end to end at tiny scale, through real `iqpfr` processes.

The commands are read from README.md (the block between ``<!-- train-your-own:cpu -->`` markers)
and run exactly as printed, in a folder that holds what the README says the user has: score faces
-> stages I, II, III (tiny configs, a few steps each) -> restore with the run's weights -> `iqpfr
eval` against GT -> ONNX export with --check and the fp16 weight export. Each hand-over is checked
on the files themselves, so a stage that silently ignored its predecessor's weights fails here.
The README's GPU / torchrun commands are checked to parse (torchrun's own parser) and to resolve
their configs."""

from __future__ import annotations

import json
import os
import re
import shlex
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


README = ROOT / "README.md"
RUNS = Path("runs/smoke")  # where the README's CPU commands write, relative to the folder they run in


def readme_blocks(section: str = "### Train your own") -> list[str]:
    """The ```bash blocks of the README section ``section`` (up to the next heading of its level)."""
    text = README.read_text()
    start = text.index(section)
    level = section.split(" ")[0]
    end = text.find(f"\n{level} ", start + len(section))
    return re.findall(r"```bash\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


def commands(block: str) -> list[list[str]]:
    """Shell words of each command of a bash block (continuation lines joined, comments dropped)."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def cpu_commands() -> list[list[str]]:
    text = README.read_text()
    start = text.index("<!-- train-your-own:cpu -->")
    end = text.index("<!-- /train-your-own:cpu -->", start)
    blocks = re.findall(r"```bash\n(.*?)```", text[start:end], flags=re.S)
    assert len(blocks) == 1, "the marked README block must hold one bash block"
    return commands(blocks[0])


def test_train_your_own_end_to_end(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export check needs onnxruntime (the onnx extra)")
    cmds = cpu_commands()
    steps = [" ".join(c[1:3]) if c[1] in ("train", "export") else c[1] for c in cmds]
    assert all(c[0] == "iqpfr" for c in cmds), cmds
    # the README path in its order: a step dropped from the README fails here, not silently
    assert [s.split(" ")[0] for s in steps] == ["score", "train", "train", "train", "make-testset", "restore",
                                                 "restore", "eval", "export", "export"], steps
    assert steps[-2:] == ["export onnx", "export weights"]

    # what the README says the user has: my_faces/, my_test_faces/, and the repository's configs/ and src/
    source = shared_path("data", "ffhq_train256")
    names = sorted(p.name for p in source.iterdir() if p.suffix == ".jpg")[: N_TRAIN + N_TEST]
    faces, held = tmp_path / "my_faces", tmp_path / "my_test_faces"
    faces.mkdir()
    held.mkdir()
    for i, name in enumerate(names):
        shutil.copy(source / name, (faces if i < N_TRAIN else held) / name)
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    (tmp_path / "src").symlink_to(ROOT / "src", target_is_directory=True)

    outputs = [iqpfr(*cmd[1:], cwd=tmp_path) for cmd in cmds]
    runs = tmp_path / RUNS

    # 0. scores of the training faces (the condition and the HQ+ split)
    rows = (runs / "scores.csv").read_text().splitlines()
    assert rows[0].split(",")[-1] == "score" and len(rows) == N_TRAIN + 1

    # 1-3. the three stages, each started from the files the previous one wrote
    r1, r2, r3 = (runs / f"stage{i}" for i in (1, 2, 3))
    s3_steps = json.loads(tensors(r3 / "model_ema.safetensors")[1]["train_config"])["total_steps"]
    w1, m1 = tensors(r1 / "model_ema.safetensors")
    w2, m2 = tensors(r2 / "model_ema.safetensors")
    w3, m3 = tensors(r3 / "model_ema.safetensors")
    assert (m1["stage"], m2["stage"], m3["stage"]) == ("1", "2", "3")
    for meta in (m1, m2, m3):  # the README's --set values reached the runs
        cfg = json.loads(meta["train_config"])
        assert cfg["data"]["folders"] == ["my_faces"] and cfg["data"]["scores_csv"] == str(RUNS / "scores.csv")
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
    assert json.loads(m3["train_config"])["model"]["init"] == str(RUNS / "stage2" / "model_ema.safetensors")

    # 4. restored held-out faces with the run's weights, and a whole photo
    faces_out = sorted((runs / "restored" / "restored_faces").glob("*.png"))
    assert len(faces_out) == N_TEST
    assert list((runs / "photo" / "final_results").glob("*")), "no restored photo written"

    # 5. metrics of the restored faces against GT: every face paired
    results = runs / "eval.csv"
    summary = json.loads(results.with_suffix(".summary.json").read_text())
    text = json.dumps(summary)
    assert "psnr" in text and "ssim" in text
    lines = results.read_text().splitlines()
    assert len(lines) == N_TEST + 1, lines

    # 6. ONNX export checked against PyTorch in onnxruntime; the fp16 file loads by path alone
    assert (runs / "model.onnx").is_file() and "OK" in outputs[-2], outputs[-2]
    from iqpfr import load_model

    model = load_model(runs / "my_model.safetensors")
    assert model.preset == "iqpfr-tiny" and model.config["img_size"] == 32
    assert "sha256" in outputs[-1]


def _config_and_sets(words: list[str]) -> tuple[str, list[str]]:
    """(CONFIG, [key=value ...]) of the words after ``iqpfr train``."""
    config, sets, i = None, [], 0
    while i < len(words):
        if words[i] == "--set":
            sets.append(words[i + 1])
            i += 2
            continue
        if words[i] in ("-o", "--output", "--resume", "--preview-degradations"):
            i += 2
            continue
        if not words[i].startswith("-") and words[i] != "precompute-codes" and config is None:
            config = words[i]
        i += 1
    assert config is not None, words
    return config, sets


def test_readme_gpu_and_torchrun_commands_parse_and_resolve(tmp_path):
    """Every command of the README's GPU / multi-GPU / multi-node blocks parses (`iqpfr`'s parser;
    torchrun lines also with torchrun's own), and every `iqpfr train` resolves its config with its
    --set values."""
    from torch.distributed.run import get_args_parser

    from iqpfr.cli import build_parser
    from iqpfr.train.config import load_train_config

    blocks = readme_blocks()
    cmds = [c for block in blocks[1:] for c in commands(block)]  # blocks[0]: the CPU block, run above
    torchruns = [c for c in cmds if c[0] == "torchrun"]
    assert len(torchruns) >= 5 and any("--rdzv_backend" in c for c in torchruns) and any(
        "--node_rank" in c for c in torchruns)
    env = {"NODE_RANK": "1"}
    trains = 0
    for cmd in cmds:
        words = [re.sub(r"\$(\w+)", lambda m: env[m.group(1)], w) for w in cmd]
        if words[0] == "torchrun":
            args = get_args_parser().parse_args(words[1:])
            assert args.module and args.training_script == "iqpfr", words
            assert args.nproc_per_node == "8", words
            words = ["iqpfr", *args.training_script_args]
        assert words[0] == "iqpfr", words
        build_parser().parse_args(words[1:])  # every flag exists (argparse exits on an unknown one)
        if words[1] != "train":
            continue
        config, sets = _config_and_sets(words[2:])
        cfg = load_train_config(str(ROOT / config), sets)
        if "data.folders=[my_faces]" in sets:
            assert cfg.data.folders == ["my_faces"]
        trains += 1
    assert trains >= 10
