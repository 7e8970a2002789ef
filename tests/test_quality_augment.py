"""Quality-augmented targets (blurred / sharpened copies as targets, conditioned on their scores),
the stage-II quality loss restricted to high conditions, and stage III's large-input share."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from iqpfr.data.dataset import FaceDataset, preset_degrader, read_target_variants
from iqpfr.data.degradations import sharpness_variant


def _laplacian_energy(img: np.ndarray) -> float:
    g = img.astype(np.float64).mean(axis=2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.abs(lap).mean())


def _face(size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size]
    base = 128 + 60 * np.sin(x / 3.0) * np.cos(y / 5.0)
    img = np.stack([base, base * 0.9, base * 0.8], axis=2) + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_sharpness_variant_orders_detail_and_is_deterministic():
    img = _face()
    energies = [_laplacian_energy(sharpness_variant(img, level)) for level in (-1.0, -0.5, 0.0, 0.4, 1.0)]
    assert energies == sorted(energies) and energies[0] < 0.5 * energies[2] < energies[4]
    assert np.array_equal(sharpness_variant(img, 0.0), img)
    out = sharpness_variant(img, 0.7)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.array_equal(out, sharpness_variant(img, 0.7))
    # pixel sizes scale with `scale` (the image size over the training resolution)
    assert np.array_equal(sharpness_variant(img, -0.8, scale=2.0),
                          cv2.GaussianBlur(img, (0, 0), 1.6, borderType=cv2.BORDER_REFLECT_101))
    assert not np.array_equal(sharpness_variant(img, 0.5, scale=2.0), sharpness_variant(img, 0.5))
    with pytest.raises(ValueError, match="uint8"):
        sharpness_variant(img.astype(np.float32), 0.5)


def test_read_target_variants(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("imagename,level,S,score\na.png,-0.5,0.3,0.05\na.png,0,0.5,0.5\na.png,0.4,0.7,0.93\n"
                    "b.jpg,x,0.1,0.2\n")
    table = read_target_variants(path)
    assert table["a.png"] == [(-0.5, 0.05), (0.4, 0.93)] and table["a"] == table["a.png"]
    assert "b.jpg" not in table  # a non-numeric row is skipped
    bad = tmp_path / "bad.csv"
    bad.write_text("imagename,sigma,score\na.png,1,0.1\n")
    with pytest.raises(ValueError, match="level"):
        read_target_variants(bad)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_target_variants(tmp_path / "nope.csv")


@pytest.fixture()
def face_folder(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.roll(_face(), 7 * i, axis=1))
    return folder


def _dataset(folder, **kw):
    return FaceDataset([folder], resolution=32, seed=1, default_score=0.6,
                       degrader=preset_degrader("large", resolution=32), **kw)


def test_dataset_swaps_target_and_condition_but_not_the_input(face_folder):
    plain = _dataset(face_folder)
    variants = {f"{i:02d}.png": [(-0.8, 0.05)] for i in range(3)}  # face 03 has none
    aug = _dataset(face_folder, target_variants=variants, target_variant_prob=1.0)
    for i in range(4):
        a, b = plain[(0, i)], aug[(0, i)]
        assert torch.equal(a["lq"], b["lq"])  # the input is still degraded from the face itself
        if i < 3:
            assert float(b["target_level"]) == pytest.approx(-0.8) and float(b["score"]) == pytest.approx(0.05)
            assert not torch.equal(a["gt"], b["gt"])
            # the blurred target has less detail than the face
            assert b["gt"].diff(dim=-1).abs().mean() < a["gt"].diff(dim=-1).abs().mean()
        else:
            assert float(b["target_level"]) == 0 and torch.equal(a["gt"], b["gt"])
    half = _dataset(face_folder, target_variants=variants, target_variant_prob=0.5)
    levels = [float(half[(e, i)]["target_level"]) for e in range(8) for i in range(3)]
    assert 0 < [v < 0 for v in levels].count(True) < len(levels)
    with pytest.raises(ValueError, match="target_variants"):
        _dataset(face_folder, target_variant_prob=0.5)


def test_code_targets_encode_changed_faces_and_read_the_rest_from_the_table():
    from iqpfr.models.autoencoder import VQAutoEncoder
    from iqpfr.train.targets import CodeTargets

    torch.manual_seed(0)
    vq = VQAutoEncoder(img_size=32, nf=32, ch_mult=(1, 1), res_blocks=1, attn_resolutions=(), codebook_size=16,
                       emb_dim=32, dual_codebook=True)
    gt = torch.rand(3, 3, 32, 32) * 2 - 1
    live = CodeTargets(vq)
    idx, hq_idx, _ = live({"gt": gt})
    table = {"names": ["a", "b", "c"], "common": torch.stack([idx, idx], 1).clone(),
             "hq": torch.stack([hq_idx, hq_idx], 1).clone(), "latent_hw": [16, 16]}
    table["common"][1] = (table["common"][1] + 1) % 16  # a stale row: only used if read from the table
    stored = CodeTargets(vq, table)
    batch = {"gt": gt, "name": ["a", "b", "c"], "flipped": [False, False, False],
             "target_level": torch.tensor([0.0, -0.5, 0.0])}
    got, got_hq, feat = stored(batch)
    assert torch.equal(got, idx) and torch.equal(got_hq, hq_idx)  # row b re-encoded, not read
    batch["target_level"] = torch.zeros(3)
    assert not torch.equal(stored(batch)[0][1], idx[1])
    assert feat.shape[0] == 3


def test_quality_loss_mask_and_large_input_share():
    from iqpfr.train.losses import quality_loss
    from iqpfr.train.stage3 import large_input
    from train_tiny import SharpnessScorer

    scorer = SharpnessScorer()
    torch.manual_seed(0)
    # samples 0 and 3 are sharp noise (score ~1), 1 and 2 flat gray (score 0)
    images = torch.zeros(4, 3, 16, 16)
    images[[0, 3]] = torch.rand(2, 3, 16, 16) * 2 - 1
    images.requires_grad_(True)
    full, _ = quality_loss(scorer, images)
    mask = torch.tensor([True, False, False, True])
    part, mean = quality_loss(scorer, images, mask)
    ref, _ = quality_loss(scorer, images[mask])
    assert torch.allclose(part, ref) and full.item() > 0.4 and part.item() < 0.1 and mean.item() > 0.9
    none, nan = quality_loss(scorer, images, torch.zeros(4, dtype=torch.bool))
    assert float(none.detach()) == 0 and torch.isnan(nan)
    none.backward()  # a zero loss that still backpropagates
    assert [large_input(s, 0.0) for s in range(10)].count(True) == 0
    assert [large_input(s, 1.0) for s in range(10)].count(True) == 10
    picks = [large_input(s, 0.5) for s in range(100)]
    assert picks.count(True) == 50 and not all(picks[::2])  # alternate, not a block
