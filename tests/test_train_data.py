"""Training data, targets and loss helpers: reproducible samples, resumable order, score join,
precomputed codes equal to on-the-fly ones, offline perceptual loss, schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iqpfr.data.dataset import FaceDataset, ResumableSampler, preset_degrader, read_scores_csv
from iqpfr.train.base import lr_at
from iqpfr.train.config import OptimConfig
from train_tiny import ROOT, tiny_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # two OpenMP threads on a busy 2-core machine run ~10x slower than one
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def faces():
    from conftest import shared_path

    return shared_path("data", "ffhq_train256")


def _dataset(folder, **kw):
    kw.setdefault("default_score", 0.8)
    return FaceDataset([folder], resolution=32, seed=3, limit=12,
                       degrader=preset_degrader("large", resolution=32), **kw)


def test_samples_are_pure_functions_of_seed_epoch_index(faces):
    ds = _dataset(faces)
    a, b = ds[(1, 5)], ds[(1, 5)]
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
    assert a["gt"].shape == (3, 32, 32) and -1 <= float(a["gt"].min()) and float(a["gt"].max()) <= 1
    assert not torch.equal(a["lq"], ds[(2, 5)]["lq"])  # a new epoch draws a new degradation
    assert not torch.equal(a["lq"], a["gt"])
    # the data-loader worker count does not change a batch
    from torch.utils.data import DataLoader

    def first_batch(workers):
        sampler = ResumableSampler(len(ds), seed=3)
        return next(iter(DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)))

    b0, b2 = first_batch(0), first_batch(2)
    assert torch.equal(b0["lq"], b2["lq"]) and b0["name"] == b2["name"]


def test_sampler_resumes_and_shards():
    full = iter(ResumableSampler(10, seed=1))
    stream = [next(full) for _ in range(25)]
    later = iter(ResumableSampler(10, seed=1, start=13))
    assert [next(later) for _ in range(12)] == stream[13:]
    assert {e for e, _ in stream} == {0, 1, 2} and sorted(i for e, i in stream if e == 0) == list(range(10))
    r0 = ResumableSampler(11, seed=1, rank=0, world_size=2).epoch_indices(4)
    r1 = ResumableSampler(11, seed=1, rank=1, world_size=2).epoch_indices(4)
    assert len(r0) == len(r1) == 5 and not set(r0) & set(r1)


def test_scores_csv_join(tmp_path, faces):
    names = sorted(p.name for p in faces.iterdir() if p.suffix == ".jpg")[:12]
    csv = tmp_path / "scores.csv"
    rows = [f"{n},{0.1 * (i % 10)}" for i, n in enumerate(names[:-1])]
    rows.append(f"{names[-1].rsplit('.', 1)[0]},1.0")  # by stem; 1.0 would overflow the 10 buckets
    csv.write_text("imagename,score\n" + "\n".join(rows) + "\navg,nan\n")
    table = read_scores_csv(csv)
    assert table[names[3]] == pytest.approx(0.3)
    ds = _dataset(faces, scores_csv=csv, default_score=None)
    assert ds[(0, 3)]["score"].item() == pytest.approx(0.3)
    assert 0.99 < ds.scores[-1] < 1.0
    csv.write_text("imagename,score\n" + "\n".join(rows[:5]) + "\n")
    with pytest.raises(ValueError, match="no score for 7 of 12"):
        _dataset(faces, scores_csv=csv, default_score=None)


def test_unreadable_face_is_skipped_with_a_named_warning(tmp_path, faces):
    import shutil

    for p in sorted(faces.iterdir())[:3]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "00001.jpg").write_bytes(b"not a jpeg")
    ds = _dataset(tmp_path)
    with pytest.warns(UserWarning, match="00001.jpg"):
        item = ds[(0, 1)]
    assert item["name"] == "00002.jpg"


def test_degradation_scales_with_resolution():
    d512, d128 = preset_degrader("large"), preset_degrader("large", resolution=128)
    assert d128.cfg.blur_sigma == pytest.approx((0.25, 3.75)) and d128.cfg.downsample == pytest.approx((1.0, 7.5))
    assert d128.cfg.kernel_size < d512.cfg.kernel_size and d128.cfg.kernel_size % 2 == 1
    assert d128.cfg.noise == d512.cfg.noise and d128.cfg.jpeg_quality == d512.cfg.jpeg_quality


def test_pyramid_perceptual_loss(faces):
    import cv2

    from iqpfr.train.perceptual import PyramidPerceptualLoss, ms_ssim

    ds = FaceDataset([faces], resolution=64, seed=0, default_score=0.5, limit=2)
    x = torch.stack([ds[(0, i)]["gt"] for i in range(2)])
    loss = PyramidPerceptualLoss()
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(ms_ssim((x + 1) / 2, (x + 1) / 2), torch.ones(2))
    blurred = []
    for sigma in (0.8, 2.0):
        img = ((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
        b = cv2.GaussianBlur(img, (0, 0), sigma).astype(np.float32) / 127.5 - 1
        blurred.append(torch.from_numpy(b).permute(2, 0, 1)[None])
    mild, strong = (float(loss(b, x[:1])) for b in blurred)
    assert 0 < mild < strong  # more blur, larger loss
    y = x.clone().requires_grad_(True)
    loss(y, x.flip(-1)).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_lr_schedules():
    cos = OptimConfig(lr=1e-3, schedule="cosine", period=100, eta_min=1e-5)
    assert lr_at(1, 1e-3, cos) == pytest.approx(1e-3)
    assert lr_at(51, 1e-3, cos) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(101, 1e-3, cos) == pytest.approx(1e-3)  # restart
    ms = OptimConfig(schedule="multistep", milestones=[10, 20], gamma=0.5)
    assert [lr_at(s, 1.0, ms) for s in (10, 11, 21)] == [1.0, 0.5, 0.25]
    warm = OptimConfig(schedule="constant", warmup=4)
    assert [lr_at(s, 1.0, warm) for s in (1, 4, 5)] == [0.25, 1.0, 1.0]


def test_gan_helpers():
    from iqpfr.train.discriminator import VQGANDiscriminator
    from iqpfr.train.losses import adaptive_gan_weight, hinge_d_loss, hinge_g_loss

    d = VQGANDiscriminator(ndf=8, n_layers=3)
    assert d(torch.zeros(2, 3, 32, 32)).shape[:2] == (2, 1)
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0
    assert float(hinge_g_loss(torch.full((4,), 0.5))) == -0.5
    w = torch.ones(3, requires_grad=True)
    rec, gan = (w * 10).sum(), (w * 0.001).sum()
    assert float(adaptive_gan_weight(rec, gan, w, scale=0.8)) == pytest.approx(0.8)  # clamped at 1
    rec, gan = (w * 1).sum(), (w * 4).sum()
    assert float(adaptive_gan_weight(rec, gan, w, scale=0.8)) == pytest.approx(0.8 * 0.25, rel=1e-3)


def test_precompute_codes_match_on_the_fly_targets(tmp_path):
    from safetensors.torch import save_file

    from iqpfr.cli import main
    from iqpfr.data.dataset import list_face_images
    from iqpfr.train.networks import build_autoencoder
    from iqpfr.train.targets import CodeTargets, build_target_vq, load_codes

    cfg = tiny_config(2, tmp_path / "run", "model.init=x", "data.limit=6")
    torch.manual_seed(0)
    vq = build_autoencoder(cfg)
    weights = tmp_path / "vq.safetensors"
    save_file({k: v.contiguous() for k, v in vq.state_dict().items()}, str(weights))
    config = tmp_path / "c.yaml"
    folder = cfg.data.folders[0]
    config.write_text(f"base: {ROOT}/configs/tiny/stage2.yaml\n"
                      f"data: {{folders: [{folder}], limit: 6}}\nmodel: {{init: {weights}}}\n")
    out = tmp_path / "codes.pt"
    assert main(["train", "precompute-codes", str(config), "-o", str(out), "--no-progress"]) == 0
    assert main(["train", "precompute-codes", str(config), "-o", str(out)]) == 2  # never overwritten
    table = load_codes(out)
    assert table["common"].shape == (6, 2, 64) and table["hq"].shape == (6, 2, 64)
    cfg.model.init = str(weights)
    ds = FaceDataset([folder], resolution=32, seed=0, default_score=0.8, limit=6)
    batch = {k: [ds[(0, i)][k] for i in range(6)] for k in ("gt", "name", "flipped")}
    batch["gt"] = torch.stack(batch["gt"])
    assert any(batch["flipped"]) and not all(batch["flipped"])
    live = CodeTargets(build_target_vq(cfg, weights))
    stored = CodeTargets(build_target_vq(cfg, weights), table)
    for a, b in zip(live(batch), stored(batch)):
        assert torch.equal(a, b)
    assert [p.name for p in list_face_images([folder], 6)] == table["names"]
    assert math.isfinite(float(live(batch)[2].abs().sum()))


def test_preview_degradations_cli(tmp_path):
    from PIL import Image

    from iqpfr.cli import main

    cfg = tiny_config(3, tmp_path, "model.init=x", "model.vqgan=x")
    config = tmp_path / "c.yaml"
    config.write_text(f"base: {ROOT}/configs/tiny/stage3.yaml\n"
                      f"run_dir: {tmp_path}\ndata: {{folders: [{cfg.data.folders[0]}]}}\n")
    assert main(["train", str(config), "--preview-degradations", "3"]) == 0
    with Image.open(tmp_path / "preview.png") as im:
        assert im.size == (3 * 32, 3 * 32)  # LQ large | LQ small | GT, three faces


def test_stage1_init_from_a_single_codebook_vqgan_fills_both_codebooks(tmp_path):
    from safetensors.torch import save_file

    from iqpfr.models.autoencoder import VQAutoEncoder
    from iqpfr.train.dist import DistInfo
    from iqpfr.train.loop import RunContext
    from iqpfr.train.stage1 import Stage1

    cfg = tiny_config(1, tmp_path / "run")
    ae = cfg.model.overrides
    single = VQAutoEncoder(img_size=32, nf=32, ch_mult=ae["ch_mult"], res_blocks=1, attn_resolutions=[],
                           codebook_size=64, emb_dim=32, dual_codebook=False)
    torch.nn.init.normal_(single.quantize.embedding.weight)
    path = tmp_path / "codeformer_like.safetensors"
    save_file({k: v.contiguous() for k, v in single.state_dict().items()}, str(path))
    cfg.model.init = str(path)
    stage = Stage1(RunContext(cfg, torch.device("cpu"), DistInfo(), None), None, perceptual=torch.nn.L1Loss())
    q = stage.ae.quantize
    assert torch.equal(q.embedding.weight, single.quantize.embedding.weight)
    assert torch.equal(q.embedding_hq.weight, single.quantize.embedding.weight)
    assert torch.equal(stage.ae.encoder.blocks[0].weight, single.encoder.blocks[0].weight)


def test_lpips_loss_wrapper_on_random_vgg():
    # real LPIPS weights are not downloadable here; this checks the wrapper's shapes and gradient
    from iqpfr.eval.lpips import LPIPSVGG
    from iqpfr.train.perceptual import LPIPSLoss

    torch.manual_seed(0)
    net = LPIPSVGG()
    for lin in net.lins:  # published LPIPS calibration weights are non-negative
        lin.weight.data.abs_()
    loss = LPIPSLoss(net)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = x.clone().requires_grad_(True)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    value = loss(y + 0.3 * torch.randn_like(x), x)
    value.backward()
    assert value.ndim == 0 and float(value) > 0 and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
