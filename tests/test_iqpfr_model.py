"""IQPFR network (issue 3): dual codebook, quality conditioning, logit layout, straight-through,
per-sample batching, plug-and-play adapters. Tiny presets on CPU unless stated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conformance_weights import load_manifest, synthetic_state_dict
from conftest import shared_path
from iqpfr import create_model
from iqpfr.models.adapters import load_base_state_dict
from iqpfr.models.autoencoder import VQAutoEncoder
from iqpfr.models.conditioning import QualityEmbedding
from iqpfr.models.fuse import adaptive_instance_norm
from iqpfr.models.iqpfr import count_parameters, split_dual_logits
from iqpfr.models.quantizer import DualCodebookQuantizer
from iqpfr.weights.checkpoint import rename_iqpir_keys


def trained_looking(name: str = "iqpfr-tiny", seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny model with weights of realistic scale: spread-out codebooks (the default uniform
    +-1/N init makes all rows nearly equal) and a non-zero positional embedding."""
    torch.manual_seed(seed)
    model = create_model(name, **overrides).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.startswith("quantize.") or key == "position_emb":
                p.normal_(0.0, 0.5)
        if hasattr(model, "quality_embed"):
            model.quality_embed.weight.normal_(0.0, 1.0)
    return model


def faces(batch: int, size: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------- quality conditioning
@pytest.mark.parametrize(
    "q, bucket", [(0.0, 0), (0.099, 0), (0.1, 1), (0.35, 3), (0.7, 7), (0.9, 9), (0.95, 9), (1.0, 9)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bucket_edges(q, bucket, dtype):
    emb = QualityEmbedding((2, 3), num_buckets=10, mode="bucket")
    assert emb.bucket(torch.tensor([q], dtype=dtype)).item() == bucket
    assert torch.equal(emb(torch.tensor([q], dtype=dtype)), emb.weight[bucket].view(1, 2, 3))


def test_continuous_mode_equals_bucket_mode_at_bucket_centres_and_interpolates():
    torch.manual_seed(0)
    bucket = QualityEmbedding((4, 2, 2), mode="bucket")
    cont = QualityEmbedding((4, 2, 2), mode="continuous")
    cont.load_state_dict(bucket.state_dict())
    centres = [(k + 0.5) / 10 for k in range(10)]
    for dtype in (torch.float32, torch.float64):
        q = torch.tensor(centres, dtype=dtype)
        assert torch.equal(cont(q), bucket(q))
    # halfway between centres 1 and 2 (q = 0.2): the mean of rows 1 and 2; ends clamp to the end rows
    mid = cont(torch.tensor([0.2]))[0].flatten()
    assert torch.allclose(mid, (bucket.weight[1] + bucket.weight[2]) / 2, atol=1e-6)
    ends = cont(torch.tensor([0.0, 1.0])).flatten(1)
    assert torch.equal(ends, bucket.weight[[0, 9]])
    # the slider is continuous: a tiny step in q moves the embedding by a tiny amount
    a, b = cont(torch.tensor([0.5, 0.5001]))
    assert 0 < (a - b).abs().max() < 1e-2


def test_python_float_and_tensor_quality_agree_and_none_means_top_bucket():
    model = trained_looking()
    x = faces(1)
    with torch.no_grad():
        a = model(x, w=0.0, quality=0.7)
        b = model(x, w=0.0, quality=torch.tensor([0.7]))
        top = model(x, w=0.0, quality=None)
        nine = model(x, w=0.0, quality=torch.tensor([0.9], dtype=torch.float64))
    assert torch.equal(a.image, b.image)
    assert torch.equal(top.image, nine.image)


def test_quality_changes_predicted_codes():
    model = trained_looking()
    x = faces(2)
    with torch.no_grad():
        low = model(x, w=0.0, quality=torch.tensor([0.05, 0.05]))
        high = model(x, w=0.0, quality=torch.tensor([0.95, 0.95]))
    changed = (low.indices != high.indices).float().mean().item()
    hq_changed = (low.hq_indices != high.hq_indices).float().mean().item()
    assert changed > 0.1 and hq_changed > 0.1, (changed, hq_changed)
    assert (low.image - high.image).abs().max() > 1e-2


def test_fidelity_weight_changes_output():
    model = trained_looking()
    with torch.no_grad():
        for p in model.fuse_convs_dict.parameters():  # untrained fusion convs are near zero-mean
            p.mul_(4.0)
        x = faces(1)
        w0, w1 = model(x, w=0.0).image, model(x, w=1.0).image
        w0_tensor = model(x, w=torch.zeros(1)).image
    assert (w0 - w1).abs().max() > 1e-2
    assert torch.allclose(w0, w0_tensor, atol=1e-6, rtol=0)  # skipping the fusion == running it with 0


@pytest.mark.parametrize("name", ["iqpfr-tiny", "codeformer-tiny+q"])
def test_mixed_per_sample_w_and_quality_equal_one_by_one(name):
    model = trained_looking(name)
    if hasattr(model, "quality_adapter"):
        with torch.no_grad():
            model.quality_adapter.weight.normal_()
    x = faces(4)
    w = torch.tensor([0.0, 0.3, 0.7, 1.0])
    q = torch.tensor([0.0, 0.35, 0.9, 1.0])
    with torch.no_grad():
        batch = model(x, w=w, quality=q)
        for i in range(4):
            one = model(x[i : i + 1], w=float(w[i]), quality=float(q[i]))
            assert torch.equal(batch.indices[i], one.indices[0])
            if batch.hq_indices is not None:
                assert torch.equal(batch.hq_indices[i], one.hq_indices[0])
            assert torch.allclose(batch.image[i], one.image[0], atol=1e-5, rtol=0)
            assert torch.allclose(batch.lq_feat[i], one.lq_feat[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- dual codebook and logits
def test_dual_logit_layout_is_interleaved():
    n = 5
    head = torch.arange(2 * n, dtype=torch.float32).view(1, 1, 2 * n)  # channel c holds value c
    common, hq = split_dual_logits(head)
    assert common.flatten().tolist() == [2 * k + 1 for k in range(n)]  # j = 1: common
    assert hq.flatten().tolist() == [2 * k for k in range(n)]  # j = 0: HQ+
    model = trained_looking()
    x = faces(1)
    with torch.no_grad():
        lq_feat, _ = model.encode(x)
        lq_feat = model.condition(lq_feat, None)
        raw = model.code_logits(lq_feat)
        out = model(x, w=0.0)
    assert raw.shape[-1] == 2 * model.codebook_size
    assert torch.equal(out.logits, raw[..., 1::2]) and torch.equal(out.hq_logits, raw[..., 0::2])


def test_lookup_is_common_plus_alpha_hq():
    model = trained_looking()
    idx = torch.randint(0, model.codebook_size, (2, 256))
    hq_idx = torch.randint(0, model.codebook_size, (2, 256))
    quant = model.lookup(idx, hq_idx)
    common = model.quantize.embedding.weight[idx]  # (B, L, C)
    hq = model.quantize.embedding_hq.weight[hq_idx]
    expected = (common + 0.8 * hq).view(2, 16, 16, -1).permute(0, 3, 1, 2)
    assert torch.allclose(quant, expected, atol=1e-6)


def test_dual_quantiser_masks_hq_branch_per_sample():
    torch.manual_seed(0)
    vq = DualCodebookQuantizer(codebook_size=16, emb_dim=8, alpha=0.8, hq_threshold=0.7)
    with torch.no_grad():
        vq.embedding.weight.normal_()
        vq.embedding_hq.weight.normal_()
    z = torch.randn(3, 8, 4, 4, requires_grad=True)
    out = vq(z, torch.tensor([0.5, 0.7, 0.9]))  # 0.7 is "at or below": common only
    assert out.hq_mask.tolist() == [False, False, True]
    common = vq.rows(vq.embedding.weight, out.indices, (4, 4))
    hq = vq.rows(vq.embedding_hq.weight, out.hq_indices, (4, 4))
    assert torch.equal(out.quant[:2], common[:2])
    assert torch.allclose(out.quant[2], common[2] + 0.8 * hq[2], atol=1e-6)
    assert out.loss.shape == (3,) and out.hq_loss.shape == (3,)
    assert out.hq_loss[:2].eq(0).all() and out.hq_loss[2] > 0
    # masked samples give the HQ+ codebook no gradient; per-sample losses average to the scalar loss
    out.hq_loss[:2].sum().backward()
    assert vq.embedding_hq.weight.grad.eq(0).all()
    single = vq(z.detach(), None)
    assert single.hq_mask.all()


def test_autoencoder_keys_match_restorer_and_load_into_stage_two():
    model = create_model("iqpfr-tiny")
    vq = VQAutoEncoder.matching(model)
    vq_keys = set(vq.state_dict())
    assert vq_keys == {k for k in model.state_dict() if k.split(".")[0] in ("encoder", "quantize", "generator")}
    assert {"quantize.embedding.weight", "quantize.embedding_hq.weight"} <= vq_keys
    with torch.no_grad():
        for p in vq.parameters():
            p.add_(0.01)
    model.load_autoencoder_state_dict(vq.state_dict())
    assert torch.equal(model.quantize.embedding_hq.weight, vq.quantize.embedding_hq.weight)
    out = vq(faces(2), quality=torch.tensor([0.2, 0.95]))
    assert out.image.shape == (2, 3, 64, 64) and out.quantized.hq_mask.tolist() == [False, True]
    idx, hq_idx = vq.code_indices(faces(1))
    assert idx.shape == hq_idx.shape == (1, 256)


# ---------------------------------------------------------------- gradients (straight-through)
def _check_gradients(model, loss):
    loss.backward()
    enc = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in enc) and any(g.abs().sum() > 0 for g in enc)
    emb = model.quality_embed.weight.grad
    assert emb is not None and emb.abs().sum() > 0
    for codebook in (model.quantize.embedding.weight, model.quantize.embedding_hq.weight):
        assert codebook.grad is None or codebook.grad.eq(0).all()


def test_image_loss_reaches_encoder_and_condition_but_not_codebooks():
    model = trained_looking().train()
    x, q = faces(2), torch.tensor([0.3, 0.9])
    # the training path (IQPIR stage II): no AdaIN, straight-through lookup, w = 0
    lq_feat, skips = model.encode(x)
    lq_feat = model.condition(lq_feat, q)
    logits, hq_logits = model.predict_logits(lq_feat)
    quant = model.lookup(logits.argmax(-1), hq_logits.argmax(-1), straight_through_from=lq_feat)
    assert torch.equal(quant, model.lookup(logits.argmax(-1), hq_logits.argmax(-1)))  # value unchanged
    image = model.decode(quant, skips, 0.0)
    _check_gradients(model, image.square().mean())
    assert adaptive_instance_norm(quant, lq_feat).shape == quant.shape


def test_forward_gradient_with_fusion_also_spares_codebooks():
    model = trained_looking().train()
    out = model(faces(2), w=torch.tensor([0.0, 1.0]), quality=torch.tensor([0.1, 0.9]))
    _check_gradients(model, out.image.abs().mean())


# ---------------------------------------------------------------- adapters and presets
def test_codeformer_adapter_keeps_keys_and_function():
    base = trained_looking("codeformer-tiny")
    adapted = create_model("codeformer-tiny+q").eval()
    assert set(adapted.state_dict()) == set(base.state_dict()) | {"quality_adapter.weight"}
    load_base_state_dict(adapted, base.state_dict())  # the original state dict, strict on its keys
    x, q = faces(2), torch.tensor([0.05, 0.95])
    with torch.no_grad():
        assert torch.equal(adapted(x, w=0.5, quality=q).image, base(x, w=0.5).image)
        adapted.quality_adapter.weight.normal_()
        changed = adapted(x, w=0.5, quality=q)
    assert (changed.image - base(x, w=0.5).image).abs().max() > 1e-3
    with pytest.raises(RuntimeError):
        load_base_state_dict(adapted, {k: v for k, v in base.state_dict().items() if k != "position_emb"})


def test_gfpgan_adapter_reproduces_conformance_fixture():
    folder = shared_path("conformance", "gfpgan")
    manifest, fixture = load_manifest(folder), np.load(folder / "fixture.npz")
    model = create_model("gfpgan-v1.4+q").eval()
    assert set(model.state_dict()) == {e["key"] for e in manifest["weights"]["state_dict"]} | {"quality_adapter.weight"}
    load_base_state_dict(model, synthetic_state_dict(manifest))
    with torch.no_grad():
        out = model(torch.from_numpy(fixture["input"]), w=0.5, quality=torch.tensor([0.2])).image
    diff = (out - torch.from_numpy(fixture["out"])).abs()
    assert diff.max() <= 1e-4 and diff.mean() <= 1e-5


def test_iqpfr_512_parameter_count_matches_prediction():
    # method.md §2-3: CodeFormer (94,112,707) + HQ+ codebook 1024x256 + the head's second
    # 1024x512 half + the quality embedding 10 x (256*16*16)
    predicted = 94_112_707 + 1024 * 256 + 512 * 1024 + 10 * 65_536
    with torch.device("meta"):
        model = create_model("iqpfr-512")
        codeformer = create_model("codeformer")
    assert count_parameters(codeformer) == 94_112_707
    assert count_parameters(model) == predicted == 95_554_499
    assert model.quality_embed.weight.shape == (10, 65_536)
    assert model.idx_pred_layer[1].weight.shape == (2048, 512)


def test_iqpir_checkpoint_keys_convert():
    model = create_model("iqpfr-tiny")
    theirs = {
        {"quantize.embedding_hq.weight": "quantize_aesthetic.embedding.weight",
         "quality_embed.weight": "score_embed.weight"}.get(k, k): v
        for k, v in model.state_dict().items()
    }
    assert "quantize_aesthetic.embedding.weight" in theirs
    model.load_state_dict(rename_iqpir_keys(theirs), strict=True)


@pytest.mark.parametrize("name", ["iqpfr-tiny", "codeformer-tiny", "codeformer-tiny+q", "iqpfr-128"])
def test_presets_load_their_own_state_dict_strictly(name):
    a, b = create_model(name), create_model(name)
    b.load_state_dict(a.state_dict(), strict=True)
    out = b.eval()(faces(1, b.img_size), w=0.5)
    assert out.image.shape == (1, 3, b.img_size, b.img_size) and torch.isfinite(out.image).all()


def test_adain_switch_is_a_saved_constructor_setting(tmp_path):
    """adain=False decodes the looked-up codes as they are (no statistics from the conditioned latent);
    the setting travels in the checkpoint's config and can be overridden at load time."""
    from iqpfr.weights.checkpoint import load_model, save_model

    torch.manual_seed(0)
    on = create_model("iqpfr-tiny").eval()
    off = create_model("iqpfr-tiny", adain=False).eval()
    off.load_state_dict(on.state_dict())
    lq = torch.rand(2, 3, on.img_size, on.img_size) * 2 - 1
    with torch.no_grad():
        out_on, out_off = on(lq, w=0.0, quality=0.3), off(lq, w=0.0, quality=0.3)
        feat, skips = off.encode(lq)
        cond = off.condition(feat, 0.3)
        common, hq = off.predict_logits(cond)
        quant = off.lookup(common.argmax(-1), hq.argmax(-1))
        torch.testing.assert_close(out_off.image, off.decode(quant, skips, 0.0), rtol=0, atol=0)
        torch.testing.assert_close(out_on.image, on.decode(adaptive_instance_norm(quant, cond), skips, 0.0),
                                   rtol=0, atol=0)
    assert torch.equal(out_on.indices, out_off.indices) and not torch.allclose(out_on.image, out_off.image)
    path = tmp_path / "off.safetensors"
    save_model(off, path)
    assert load_model(path).adain is False and load_model(path, adain=True).adain is True
