"""GFPGAN v1.4 ("clean") conformance: state-dict layout and outputs against the official architecture.

Weights come from the conformance formula (``conformance_weights.py``); reference outputs from
``../shared/conformance/gfpgan/fixture.npz`` (produced by the unmodified upstream code).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import iqpfr
from conformance_weights import load_manifest, synthetic_state_dict
from conftest import shared_path
from iqpfr.models.gfpgan import GFPGANv1Clean

MAX_TOL = 1e-4
MEAN_TOL = 1e-5
TINY = dict(out_size=32, num_style_feat=32, channel_multiplier=1, num_mlp=2, narrow=0.0625)


def _official_kwargs(manifest: dict) -> dict:
    args = dict(manifest["constructor_args"])
    # loading helpers of the official class, not architecture
    args.pop("decoder_load_path", None)
    args.pop("fix_decoder", None)
    return args


def _assert_close(actual: torch.Tensor, expected: np.ndarray, name: str) -> None:
    diff = (actual - torch.from_numpy(expected)).abs()
    assert diff.shape == expected.shape, name
    assert diff.max().item() <= MAX_TOL and diff.mean().item() <= MEAN_TOL, (
        f"{name}: max {diff.max().item():.3g} mean {diff.mean().item():.3g}"
    )


@pytest.fixture(scope="module")
def official():
    folder = shared_path("conformance", "gfpgan")
    manifest = load_manifest(folder)
    model = iqpfr.create_model("gfpgan-v1.4").eval()
    assert {k: model.config[k] for k in _official_kwargs(manifest)} == _official_kwargs(manifest)
    model.load_state_dict(synthetic_state_dict(manifest), strict=True)
    return model, manifest, np.load(folder / "fixture.npz")


def test_state_dict_layout_matches_manifest(official):
    model, manifest, _ = official
    expected = [(e["key"], tuple(e["shape"])) for e in manifest["weights"]["state_dict"]]
    actual = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert actual == expected
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert len(actual) == manifest["weights"]["state_dict_entries"] == 285
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    assert (params, buffers) == (manifest["weights"]["param_count"], manifest["weights"]["buffer_count"])


def test_outputs_match_fixture_and_batch_equals_singles(official):
    model, _, fixture = official
    x = torch.from_numpy(fixture["input"])
    other = torch.flip(x, dims=[3]) * 0.8  # a second, different face for the batch check
    with torch.no_grad():
        style_code, conditions = model.encode(torch.cat([x, other]))
        batch_out = model.decode(style_code, conditions)
        single_other = model(other, w=0.3).image
    _assert_close(style_code[:1], fixture["style_code"], "style_code")
    _assert_close(batch_out[:1], fixture["out"], "out")
    assert (batch_out[1:] - single_other).abs().max().item() <= MAX_TOL
    assert (batch_out[1:] - batch_out[:1]).abs().max().item() > 0.1  # the two samples really differ


def test_forward_is_deterministic_and_ignores_w_and_quality():
    torch.manual_seed(0)
    model = GFPGANv1Clean(**TINY).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = model(x).image
        b = model(x, w=torch.tensor([0.0, 1.0]), quality=torch.tensor([0.9, 0.1])).image
    assert a.shape == (2, 3, 32, 32)
    assert torch.equal(a, b)


def test_noise_options():
    torch.manual_seed(0)
    model = GFPGANv1Clean(**TINY).eval()
    with torch.no_grad():
        for p in model.stylegan_decoder.parameters():
            if p.shape == (1,):  # noise strengths start at 0; make noise matter
                p.fill_(1.0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    dec = model.stylegan_decoder
    with torch.no_grad():
        stored = model(x).image
        explicit = model(x, noise=dec.stored_noise()).image
        zero = model(x, noise=[torch.zeros_like(n) for n in dec.stored_noise()]).image
        model.randomize_noise = True
        rand1, rand2 = model(x).image, model(x).image
    assert torch.equal(stored, explicit)
    assert (stored - zero).abs().max() > 1e-3
    assert (rand1 - rand2).abs().max() > 1e-3
    assert model.config["randomize_noise"] is True


def test_no_sft_half_and_shared_latent_variants_run():
    model = GFPGANv1Clean(**TINY, sft_half=False, different_w=False, input_is_latent=False).eval()
    with torch.no_grad():
        style_code, conditions = model.encode(torch.zeros(1, 3, 32, 32))
        out = model(torch.zeros(1, 3, 32, 32)).image
    assert style_code.shape == (1, 1, 32)
    # full-width SFT: conditions as wide as the decoder (32 channels), twice the U-Net's 16
    assert conditions[-1][0].shape == (1, 32, 32, 32)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_quality_adapter_hooks_into_style_code():
    from iqpfr.models.adapters import attach_quality_adapter

    torch.manual_seed(0)
    model = GFPGANv1Clean(**TINY).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    q = torch.tensor([0.1, 0.95])
    with torch.no_grad():
        plain = model(x).image
        attach_quality_adapter(model)
        assert torch.equal(model(x, quality=q).image, plain)  # zero-initialised: same function
        for p in model.quality_adapter.parameters():
            p.normal_()
        low, high = model(x, quality=torch.tensor([0.1, 0.1])).image, model(x, quality=q).image
    assert torch.equal(low[0], high[0])
    assert (low[1] - high[1]).abs().max() > 1e-3
