"""Plug-and-play recipes (configs/plug, method.md §9): training `codeformer+q` / `gfpgan+q` on an
"official" checkpoint changes only the quality adapter, and the result restores by path alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqpfr.train.config import load_train_config
from iqpfr.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
N_FACES = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # two OpenMP threads on a busy 2-core machine run ~10x slower than one
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_faces(folder: Path, count: int, size: int = 64, seed: int = 0) -> list[Path]:
    """Smooth synthetic face-like images (an ellipse with eyes on a gradient); real faces are not
    needed to test what the loop changes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        bg = np.stack([xx, yy, 1 - xx], -1) * rng.uniform(0.3, 1.0, 3)
        face = ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.5) / 0.4) ** 2 < 1
        img = bg.copy()
        img[face] = rng.uniform(0.5, 0.9, 3)
        for ex in (0.4, 0.6):
            img[((xx - ex) ** 2 + (yy - 0.42) ** 2) < 0.002] = 0.1
        img += rng.normal(0, 0.02, img.shape)
        path = folder / f"{i:05d}.png"
        Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def write_scores(csv: Path, paths: list[Path]) -> Path:
    """Scores spread over every bucket (0.03 .. 0.97), so the rows of 0.5 and 0.9 are both trained."""
    rows = [f"{p.name},{(i + 0.5) / len(paths):.4f}\n" for i, p in enumerate(paths)]
    csv.write_text("imagename,score\n" + "".join(rows))
    return csv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("plug_data")
    paths = write_faces(root / "faces", N_FACES)
    return root / "faces", write_scores(root / "scores.csv", paths)


def save_official(base: str, path: Path) -> dict[str, torch.Tensor]:
    """Random weights of the plain preset ``base`` written like a released checkpoint."""
    from safetensors.torch import save_file

    from iqpfr.models.factory import create_model

    torch.manual_seed(1)
    state = {k: v.contiguous() for k, v in create_model(base).state_dict().items()}
    if path.suffix == ".pth":
        torch.save({"params_ema": state}, path)  # the official CodeFormer / GFPGAN container
    else:
        save_file(state, str(path))
    return state


# (tiny config, plain preset its "official" weights come from, file format of those weights)
RECIPES = [("plug_codeformer_q", "codeformer-tiny", ".pth"), ("plug_gfpgan_q", "gfpgan-tiny", ".safetensors")]


@pytest.fixture(scope="module", params=RECIPES, ids=[r[0] for r in RECIPES])
def plug_run(request, data, tmp_path_factory):
    config, base, suffix = request.param
    root = tmp_path_factory.mktemp(config)
    faces, scores = data
    init = root / f"official{suffix}"
    official = save_official(base, init)
    cfg = load_train_config(str(ROOT / "configs" / "tiny" / f"{config}.yaml"), [
        f"run_dir={root / 'run'}", f"data.folders=[{faces}]", f"data.scores_csv={scores}", f"model.init={init}",
    ])
    summary = train(cfg, progress=False)
    return cfg, summary, official, Path(cfg.run_dir) / "model_ema.safetensors"


def test_only_the_adapter_changes(plug_run):
    from safetensors.torch import load_file

    cfg, summary, official, exported = plug_run
    assert summary["step"] == cfg.total_steps and exported.is_file()
    out = load_file(str(exported))
    out.pop("iqpfr_config")  # the self-description for tensor-only loaders
    adapter = {k for k in out if k.startswith("quality_adapter.")}
    assert adapter == {"quality_adapter.weight"}
    assert set(out) - adapter == set(official), "the export lost or gained tensors of the official network"
    for k, v in official.items():
        assert torch.equal(out[k], v), f"{k} changed: only quality_adapter.* may be trained"
    assert out["quality_adapter.weight"].abs().max() > 0, "the adapter did not move from its zero start"
    # the recipe's own losses ran: code losses for CodeFormer, image losses for GFPGAN
    keys = set(summary["history"][-1])
    assert ({"ce", "feat"} if cfg.stage2.targets == "codes" else {"l1", "perceptual"}) <= keys


def test_result_loads_by_path_and_follows_the_target(plug_run, data):
    import iqpfr
    from iqpfr.cli import main

    cfg, _, _, exported = plug_run
    model = iqpfr.load_model(exported)
    assert hasattr(model, "quality_adapter")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        low, high = model(x, quality=0.5).image, model(x, quality=0.9).image
    assert (low - high).abs().max() > 1e-4, "quality targets 0.5 and 0.9 give the same output"

    faces, _ = data
    image = faces / "00003.png"
    results = {}
    for q in ("0.5", "0.9"):
        out = exported.parent / f"restored_{q}"
        code = main(["restore", str(image), "--aligned", "--weights", str(exported), "--quality-target", q,
                     "--no-face-upsample", "-w", "0.5", "-o", str(out), "-q"])
        assert code == 0
        files = sorted(out.rglob("*.png"))
        assert files, f"no output written under {out}"
        results[q] = np.asarray(Image.open(files[0]), dtype=np.int16)
    assert np.abs(results["0.5"] - results["0.9"]).max() > 0, "the CLI ignored --quality-target"


def test_gfpgan_with_code_targets_says_what_to_do(data, tmp_path, capsys):
    from iqpfr.cli import main

    faces, _ = data
    init = tmp_path / "gfpgan.safetensors"
    save_official("gfpgan-tiny", init)
    code = main(["train", str(ROOT / "configs" / "tiny" / "plug_codeformer_q.yaml"), "--no-progress",
                 "--set", f"run_dir={tmp_path / 'run'}", "--set", f"data.folders=[{faces}]",
                 "--set", "model.name=gfpgan-tiny+q", "--set", f"model.init={init}"])
    assert code != 0
    assert "stage2.targets=image" in capsys.readouterr().err


def test_frozen_parts_missing_from_the_file_warn(data, tmp_path):
    """Only-the-adapter training from a file that lacks some fixed tensors warns that they stay at
    their random initialisation."""
    from safetensors.torch import save_file

    faces, scores = data
    init = tmp_path / "partial.safetensors"
    state = save_official("codeformer-tiny", tmp_path / "full.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("ft_layers.")}, str(init))
    cfg = load_train_config(str(ROOT / "configs" / "tiny" / "plug_codeformer_q.yaml"), [
        f"run_dir={tmp_path / 'run'}", f"data.folders=[{faces}]", f"model.init={init}"])
    with pytest.warns(UserWarning, match="random initialisation.*ft_layers"):
        train(cfg, progress=False)


def test_image_targets_resume_exactly(data, tmp_path):
    """stage2.targets=image goes through the shared loop: a run stopped after its step-4 checkpoint
    and resumed exports the same weights as an uninterrupted one (CPU, bit for bit)."""
    from safetensors.torch import load_file

    faces, scores = data
    init = tmp_path / "official.safetensors"
    save_official("gfpgan-tiny", init)

    def cfg(name: str):
        return load_train_config(str(ROOT / "configs" / "tiny" / "plug_gfpgan_q.yaml"), [
            f"run_dir={tmp_path / name}", f"data.folders=[{faces}]", f"data.scores_csv={scores}",
            f"model.init={init}", "total_steps=6", "ckpt_every=3"])

    train(cfg("whole"), progress=False)
    assert train(cfg("split"), progress=False, stop_after=4)["stopped"]
    train(cfg("split"), progress=False, resume="auto")
    a = load_file(str(tmp_path / "whole" / "model_ema.safetensors"))
    b = load_file(str(tmp_path / "split" / "model_ema.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
