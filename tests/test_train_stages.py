"""Each training stage learns on real faces (tiny 32-px configs, CPU, a few dozen steps), and the
discrete quality loss reaches the encoder only through the straight-through path."""

from __future__ import annotations

import math

import pytest
import torch

from iqpfr.train.loop import train
from train_tiny import ROOT, losses, quality_scorer, tiny_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # two OpenMP threads on a busy 2-core machine run ~10x slower than one
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("stage1")
    # a score threshold that splits the faces: HQ+ branch trained on part of each batch only
    cfg = tiny_config(1, run, "total_steps=30", "stage1.dead_code_every=10")
    cfg.data.default_score = None
    csv = run / "scores.csv"
    names = sorted(p.name for p in __import__("pathlib").Path(cfg.data.folders[0]).iterdir()
                   if p.suffix == ".jpg")[:64]
    csv.write_text("imagename,score\n" + "".join(f"{n},{0.9 if i % 2 else 0.5}\n" for i, n in enumerate(names)))
    cfg.data.scores_csv = str(csv)
    return cfg, train(cfg, progress=False)


@pytest.fixture(scope="module")
def stage2_run(stage1_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("stage2")
    init = f"model.init={stage1_run[0].run_dir}/model_ema.safetensors"
    cfg = tiny_config(2, run, init, "total_steps=30")
    return cfg, train(cfg, progress=False)


def test_stage1_reconstruction_improves(stage1_run):
    cfg, out = stage1_run
    h = out["history"]
    assert len(h) == 30 and not out["stopped"]
    rec = [r["l1"] + r["perceptual"] for r in h]
    assert _mean(rec[-5:]) < 0.85 * _mean(rec[:5]), rec
    # GAN switched on at disc_start with an adaptive weight in [0, 0.8]
    assert all("g_gan" not in r for r in h[: cfg.stage1.disc_start - 1])
    weights = losses(h, "d_weight")
    assert weights and all(0.0 <= w <= 0.8 + 1e-6 for w in weights)
    # HQ+ branch sees only faces above the threshold (every second face scores 0.9)
    shares = losses(h, "hq_share")
    assert 0.1 < _mean(shares) < 0.9
    assert all(1.0 <= r["perplexity_common"] <= 64 for r in h if "perplexity_common" in r)
    assert losses(h, "dead_codes_common"), "dead-code re-initialisation did not run"
    run_dir = __import__("pathlib").Path(cfg.run_dir)
    assert (run_dir / "model_ema.safetensors").is_file() and (run_dir / "log.jsonl").is_file()


def test_stage2_loss_falls(stage2_run):
    _, out = stage2_run
    total = losses(out["history"], "loss")
    assert len(total) == 30
    assert _mean(total[-5:]) < 0.85 * _mean(total[:5]), total
    assert losses(out["history"], "ce_hq"), "the HQ+ head is not trained"


def test_stage3_loss_falls(stage1_run, stage2_run, tmp_path):
    cfg = tiny_config(3, tmp_path / "s3", f"model.init={stage2_run[0].run_dir}/model_ema.safetensors",
                      f"model.vqgan={stage1_run[0].run_dir}/model_ema.safetensors",
                      f"model.init_discriminator={stage1_run[1]['checkpoint']}", "total_steps=24")
    out = train(cfg, progress=False)
    h = out["history"]
    kinds = [r["image_step"] for r in h]
    # schedule: image steps to 15, code-only to 20, then every 3rd step an image step
    assert kinds[:15] == [1.0] * 15 and kinds[15:20] == [0.0] * 5 and kinds[20:] == [1.0, 0.0, 0.0, 1.0]
    l1 = losses(h, "l1")
    assert _mean(l1[-4:]) < 0.9 * _mean(l1[:4]), l1
    code = [r["feat"] + r["ce"] for r in h]
    assert _mean(code[-4:]) < _mean(code[:4])
    assert losses(h, "loss_d") and all(r.get("loss_d") is None for r in h[15:20])


def _tiny_model_and_batch():
    from iqpfr.data.dataset import FaceDataset, preset_degrader
    from iqpfr.models.factory import create_model

    cfg = tiny_config(2, __import__("pathlib").Path("unused"), "model.init=unused")
    torch.manual_seed(0)
    model = create_model(cfg.model.name, **cfg.model.overrides)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(("quantize.", "generator.", "fuse_convs_dict.")))
    ds = FaceDataset(cfg.data.folders, resolution=32, seed=0, default_score=0.8, limit=4,
                     degrader=preset_degrader("large", resolution=32))
    lq = torch.stack([ds[(0, i)]["lq"] for i in range(4)])
    return model, lq


@pytest.mark.parametrize("space", ["discrete", "continuous"])
def test_quality_gradient_reaches_encoder(space):
    from iqpfr.train.losses import quality_loss
    from iqpfr.train.networks import DECODE_CONTINUOUS, DECODE_DISCRETE, CodePredictionForward

    model, lq = _tiny_model_and_batch()
    fwd = CodePredictionForward(model)
    mode = DECODE_DISCRETE if space == "discrete" else DECODE_CONTINUOUS
    lq_feat, logits, hq_logits, image = fwd(lq, torch.full((4,), 0.8), mode)
    loss, _ = quality_loss(quality_scorer(), image)
    loss.backward()

    def grad_norm(prefix: str) -> float:
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        return float(sum(g.norm() for g in grads)) if grads else 0.0

    assert grad_norm("encoder.") > 0, "quality gradient does not reach the encoder"
    assert grad_norm("quality_embed.") > 0, "quality gradient does not reach the score embedding"
    # argmax is not differentiable: the code predictor gets nothing; frozen parts stay frozen
    assert grad_norm("idx_pred_layer.") == 0 and grad_norm("ft_layers.") == 0
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(("quantize.", "generator.")))
    if space == "discrete":
        # the decoder saw exactly the discrete codebook feature (straight-through keeps the value)
        with torch.no_grad():
            discrete = model.lookup(logits.argmax(-1), hq_logits.argmax(-1))
            expected = model.decode(discrete, {}, 0.0)
        assert torch.equal(image.detach(), expected)


def test_stage2_quality_loss_switches_on(stage1_run, tmp_path):
    init = f"model.init={stage1_run[0].run_dir}/model_ema.safetensors"
    cfg = tiny_config(2, tmp_path / "q", init, "total_steps=6", "stage2.quality_weight=0.5",
                      "stage2.quality_start=4")
    out = train(cfg, progress=False, stage_overrides={"scorer": quality_scorer()})
    h = out["history"]
    assert all("quality" not in r for r in h[:3])
    assert all(math.isfinite(r["quality"]) for r in h[3:])


def test_gradient_accumulation_matches_the_large_batch(stage1_run, tmp_path):
    init = f"model.init={stage1_run[0].run_dir}/model_ema.safetensors"
    big = train(tiny_config(2, tmp_path / "big", init, "total_steps=1", "batch_size=4"), progress=False)
    acc = train(tiny_config(2, tmp_path / "acc", init, "total_steps=1", "batch_size=2", "grad_accum=2"),
                progress=False)
    # Adam turns float noise in near-zero gradients into +-lr steps: compare the gradients it saw
    # (its first moment after one step is (1 - beta1) * gradient)

    def moments(out):
        stage = out["stage"]
        state = stage.optimizers["g"].state
        return {n: state[p]["exp_avg"] for n, p in stage.model.named_parameters() if p in state}

    a, b = moments(big), moments(acc)
    assert a.keys() == b.keys() and len(a) > 10
    scale = max(float(v.abs().max()) for v in a.values())
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4 * scale, rtol=1e-3), k
    assert big["history"][0]["loss"] == pytest.approx(acc["history"][0]["loss"], rel=1e-5)


def test_cli_train_resume_and_refusal(tmp_path, capsys):
    from conftest import shared_path
    from iqpfr.cli import main

    faces = shared_path("data", "ffhq_train256")
    base = [str(ROOT / "configs" / "tiny" / "stage1.yaml"), "--set", f"run_dir={tmp_path}",
            "--set", f"data.folders=[{faces}]", "--set", "data.limit=8", "--no-progress"]
    assert main(["train", *base, "--set", "total_steps=2"]) == 0
    assert "finished step 2" in capsys.readouterr().out
    assert main(["train", *base, "--set", "total_steps=2"]) == 2  # would overwrite the run
    assert "--resume auto" in capsys.readouterr().err
    assert main(["train", *base, "--set", "total_steps=3", "--resume", "auto"]) == 0
    assert "finished step 3" in capsys.readouterr().out
    assert main(["train", *base, "--set", "optim.lr=fast"]) == 2  # typed config: one-line error
    assert "optim.lr" in capsys.readouterr().err


def test_stage1_refits_only_the_encoder(stage1_run, tmp_path):
    """stage1.frozen=[quantize, generator]: codebooks and decoder stay bit-identical, the encoder moves."""
    from iqpfr.config import ConfigError
    from iqpfr.train.networks import read_weights

    init = f"{stage1_run[0].run_dir}/model_ema.safetensors"
    frozen = ("stage1.frozen=[quantize, generator]", "stage1.dead_code_every=0", "stage1.disc_start=1000")
    cfg = tiny_config(1, tmp_path / "refit", f"model.init={init}", "total_steps=6", "ema_decay=0", *frozen)
    cfg.data.default_score = None
    cfg.data.scores_csv = stage1_run[0].data.scores_csv
    out = train(cfg, progress=False)
    assert len(out["history"]) == 6 and "d_weight" not in out["history"][-1]
    before, after = read_weights(init), read_weights(f"{cfg.run_dir}/model_ema.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in after if not k.startswith("encoder.")), "a frozen part moved"
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("encoder."))
    with pytest.raises(ConfigError, match="disc_start"):
        tiny_config(1, tmp_path / "x", f"model.init={init}", "stage1.frozen=[generator]", "stage1.disc_start=1")
    with pytest.raises(ConfigError, match="dead_code_every"):
        tiny_config(1, tmp_path / "x", f"model.init={init}", "stage1.frozen=[quantize]", "stage1.dead_code_every=5",
                    "stage1.disc_start=1000")
    with pytest.raises(ConfigError, match="not all"):
        tiny_config(1, tmp_path / "x", "stage1.frozen=[encoder, quantize, generator]")


def test_quality_rows_reset_keeps_the_default_output():
    """reset_quality_rows: every row becomes the default quality's row, so q no longer matters at the
    start and the output at the default quality is unchanged."""
    from iqpfr.models.factory import create_model
    from iqpfr.train.stage2 import reset_quality_rows

    torch.manual_seed(0)
    model = create_model("iqpfr-tiny").eval()
    lq = torch.rand(2, 3, model.config["img_size"], model.config["img_size"]) * 2 - 1
    with torch.no_grad():
        ref = model(lq, w=0.0, quality=0.9).image
        assert not torch.equal(model(lq, w=0.0, quality=0.2).image, ref)
        assert reset_quality_rows(model) == 9
        assert torch.equal(model.quality_embed.weight[0], model.quality_embed.weight[9])
        torch.testing.assert_close(model(lq, w=0.0, quality=0.9).image, ref, rtol=0, atol=0)
        torch.testing.assert_close(model(lq, w=0.0, quality=0.2).image, ref, rtol=0, atol=0)


def test_quality_embedding_learning_rate_scale():
    """optim.quality_embed_lr_scale: the quality rows get that multiple of the scheduled lr, the rest 1x."""
    from types import SimpleNamespace

    from iqpfr.models.factory import create_model
    from iqpfr.train.base import Stage
    from iqpfr.train.config import TrainConfig

    cfg = TrainConfig()
    cfg.optim.lr, cfg.optim.quality_embed_lr_scale, cfg.optim.warmup = 1e-3, 25.0, 10
    stage = Stage(SimpleNamespace(cfg=cfg, device=torch.device("cpu")))
    model = create_model("iqpfr-tiny")
    opt = stage.make_optimizer("g", model.parameters(), cfg.optim.lr, stage.quality_lr_scales(model))
    stage.set_lr(5)  # half-way through the warm-up
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    base = lrs[id(model.feat_emb.weight)]
    assert 0 < base < 1e-3 and lrs[id(model.quality_embed.weight)] == pytest.approx(25 * base)
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(1 for p in model.parameters() if p.requires_grad)
    assert stage.lr_logs()["lr_g"] == pytest.approx(base)


def test_stage2_train_only_tunes_just_the_quality_rows(stage1_run, tmp_path):
    """stage2.train_only=[quality_embed.]: every other tensor of the network stays bit-identical."""
    from iqpfr.train.networks import read_weights

    init = f"{stage1_run[0].run_dir}/model_ema.safetensors"
    cfg = tiny_config(2, tmp_path / "rows", f"model.init={init}", "total_steps=3", "ema_decay=0",
                      "stage2.train_only=[quality_embed.]", "optim.quality_embed_lr_scale=10")
    train(cfg, progress=False)
    after = read_weights(f"{cfg.run_dir}/model_ema.safetensors")
    start = read_weights(init)
    moved = [k for k in after if k in start and not torch.equal(start[k], after[k])]
    assert moved == [], moved  # the stage-I parts
    torch.manual_seed(0)  # the rows are new in stage II: compare with a second run's start instead
    cfg2 = tiny_config(2, tmp_path / "rows0", f"model.init={init}", "total_steps=1", "ema_decay=0",
                       "stage2.train_only=[quality_embed.]", "optim.lr=0")
    train(cfg2, progress=False)
    first = read_weights(f"{cfg2.run_dir}/model_ema.safetensors")
    changed = {k for k in after if not torch.equal(first[k], after[k])}
    assert changed == {"quality_embed.weight"}, changed


def test_quality_rows_line_projection():
    """project_quality_rows_to_line: the anchor row stays, the rows lie on one line through it at the
    fixed offsets, and projecting again changes nothing."""
    from types import SimpleNamespace

    from iqpfr.models.conditioning import QualityEmbedding
    from iqpfr.train.stage2 import line_offsets, project_quality_rows_to_line

    torch.manual_seed(0)
    model = SimpleNamespace(quality_embed=QualityEmbedding((2, 3, 3), num_buckets=10))
    anchor = model.quality_embed.weight[9].clone()
    assert line_offsets(10, 9).tolist() == pytest.approx([(k - 9) / 9 for k in range(10)])
    direction = project_quality_rows_to_line(model, 9)
    rows = model.quality_embed.weight.detach()
    assert torch.equal(rows[9], anchor)
    torch.testing.assert_close(rows, anchor + line_offsets(10, 9)[:, None] * direction)
    again = rows.clone()
    project_quality_rows_to_line(model, 9)
    torch.testing.assert_close(model.quality_embed.weight.detach(), again)


def test_stage2_quality_rows_line_keeps_the_default_row(stage1_run, tmp_path):
    """stage2.quality_rows_line: after training, row 9 (q = 0.9) is the start's row 9 bit for bit and the
    other rows are row 9 + o_k v with one learned direction v != 0."""
    from iqpfr.train.networks import read_weights
    from iqpfr.train.stage2 import line_offsets

    init = f"{stage1_run[0].run_dir}/model_ema.safetensors"
    common = [f"model.init={init}", "ema_decay=0", "stage2.train_only=[quality_embed.]"]
    cfg = tiny_config(2, tmp_path / "line", *common, "total_steps=3", "stage2.quality_rows_line=true",
                      "optim.quality_embed_lr_scale=10")
    train(cfg, progress=False)
    torch.manual_seed(0)
    start_cfg = tiny_config(2, tmp_path / "start", *common, "total_steps=1", "optim.lr=0")
    train(start_cfg, progress=False)
    start = read_weights(f"{start_cfg.run_dir}/model_ema.safetensors")["quality_embed.weight"]
    rows = read_weights(f"{cfg.run_dir}/model_ema.safetensors")["quality_embed.weight"]
    assert torch.equal(rows[9], start[9])
    direction = (rows[0] - rows[9]) / line_offsets(10, 9)[0]
    assert direction.abs().max() > 0
    torch.testing.assert_close(rows, rows[9] + line_offsets(10, 9)[:, None] * direction, rtol=1e-5, atol=1e-6)


def test_run_exports_load_by_path_alone(stage1_run, stage2_run, tmp_path, capsys):
    """`iqpfr train`'s model_ema.safetensors rebuilds its exact architecture (overrides included)
    in load_model and `iqpfr restore --weights`, with no --model; a wrong --model fails in one line."""
    from pathlib import Path

    from iqpfr.cli import main
    from iqpfr.models.autoencoder import VQAutoEncoder
    from iqpfr.weights.checkpoint import load_model, read_model_config

    vq_path = Path(stage1_run[0].run_dir) / "model_ema.safetensors"
    assert isinstance(load_model(vq_path), VQAutoEncoder)
    path = Path(stage2_run[0].run_dir) / "model_ema.safetensors"
    config = read_model_config(path)
    assert config["stage"] == 2 and config["class"].endswith(":IQPFR") and config["model_args"]["img_size"] == 32
    model = load_model(path)
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 32, 32), w=torch.full((1,), 0.5)).image
    assert y.shape == (1, 3, 32, 32)
    import importlib.resources

    sample = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
    out = tmp_path / "out"
    code = main(["restore", str(sample), "-o", str(out), "--aligned", "--weights", str(path), "--device", "cpu",
                 "--quality-target", "0.5", "--no-face-upsample", "-q"])
    assert code == 0, capsys.readouterr().err
    assert (out / "final_results" / "astronaut_degraded.jpg").is_file()
    pytest.importorskip("onnxruntime")
    assert main(["export", "onnx", str(path), "-o", str(tmp_path / "run.onnx"), "--check"]) == 0
    assert (tmp_path / "run.onnx").is_file()
    # a bare weight file (no config) named as the wrong architecture: one line, not a key dump
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(path)), str(bare))
    code = main(["restore", str(sample), "-o", str(tmp_path / "out2"), "--aligned", "--weights", str(bare),
                 "--model", "iqpfr-128", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert code != 0 and len(lines) == 1 and "do not fit the architecture tried (iqpfr-128)" in lines[0]
    assert len(lines[0]) < 600


def test_run_export_loads_through_spandrel(stage2_run):
    """A trained run's file (its overrides are not a preset's shapes) loads in spandrel, as ComfyUI
    and AUTOMATIC1111 load it, and restores as iqpfr does."""
    from pathlib import Path

    spandrel = pytest.importorskip("spandrel", reason="needs the spandrel extra")
    import iqpfr.integrations.spandrel as iqpfr_spandrel
    from iqpfr.restorer import FaceRestorer
    from iqpfr.weights.checkpoint import load_model

    path = Path(stage2_run[0].run_dir) / "model_ema.safetensors"
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == "iqpfr.IQPFR" and "guessed-config" not in descriptor.tags
    faces = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = FaceRestorer(load_model(path), device="cpu").restore_aligned(faces, fidelity=0.3, quality=0.6)
    got = iqpfr_spandrel.restore_aligned(descriptor, faces, fidelity=0.3, quality=0.6)
    assert (got - expected).abs().max().item() <= 1e-4
