"""CodeFormer vs the official architecture: ``../shared/conformance/codeformer`` fixture.

The model is built once per module (a 512 px forward costs seconds on CPU) and loaded with the
synthetic weights of the manifest; tolerances are the fixture README's.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conformance_weights import load_manifest, synthetic_state_dict
from conftest import shared_path
from iqpfr import create_model
from iqpfr.models.adapters import attach_quality_adapter

MAX_ABS, MEAN_ABS = 1e-4, 1e-5


def assert_close(actual: torch.Tensor, expected: np.ndarray, name: str) -> None:
    diff = (actual.detach().float() - torch.from_numpy(expected)).abs()
    assert diff.max().item() <= MAX_ABS, f"{name}: max |diff| {diff.max().item():.3g}"
    assert diff.mean().item() <= MEAN_ABS, f"{name}: mean |diff| {diff.mean().item():.3g}"


@pytest.fixture(scope="module")
def official():
    folder = shared_path("conformance", "codeformer")
    manifest = load_manifest(folder)
    fixture = np.load(folder / "fixture.npz")
    model = create_model("codeformer").eval()
    model.load_state_dict(synthetic_state_dict(manifest), strict=True)
    return model, manifest, fixture


def assert_shared_outputs(out, fixture, rows=None) -> None:
    rows = range(out.image.shape[0]) if rows is None else rows
    for i in rows:
        assert torch.equal(out.indices[i : i + 1], torch.from_numpy(fixture["indices"])), f"indices of row {i}"
        assert_close(out.logits[i : i + 1], fixture["logits"], f"logits[{i}]")
        assert_close(out.lq_feat[i : i + 1], fixture["lq_feat"], f"lq_feat[{i}]")
        assert_close(out.quant_feat[i : i + 1], fixture["quant_feat"], f"quant_feat[{i}]")


def test_state_dict_layout_equals_manifest(official):
    model, manifest, _ = official
    expected = [(e["key"], tuple(e["shape"])) for e in manifest["weights"]["state_dict"]]
    actual = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert actual == expected  # same keys, same shapes, same (official) order
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert sum(p.numel() for p in model.parameters()) == manifest["weights"]["param_count"]


@pytest.fixture(scope="module")
def single_w0(official):
    model, _, fixture = official
    with torch.no_grad():
        return model(torch.from_numpy(fixture["input"]), w=0.0)  # Python float 0: fusion skipped


def test_single_face_matches_fixture(official, single_w0):
    _, _, fixture = official
    assert_close(single_w0.image, fixture["out_w0.0"], "out_w0.0")
    assert_shared_outputs(single_w0, fixture)


def test_mixed_w_batch_matches_fixture_and_single_run(official, single_w0):
    model, manifest, fixture = official
    weights = manifest["fidelity_weights"]
    x = torch.from_numpy(fixture["input"]).expand(len(weights), -1, -1, -1).contiguous()
    with torch.no_grad():
        out = model(x, w=torch.tensor(weights))  # tensor w: the fusion always runs, w=0 included
    for i, w in enumerate(weights):
        assert_close(out.image[i : i + 1], fixture[f"out_w{w:.1f}"], f"out_w{w:.1f} (batch row {i})")
    assert_shared_outputs(out, fixture)
    # the row with w = 0 equals the single run that skipped the fusion blocks (to float32 noise:
    # batch size changes the conv kernels' summation order)
    row0 = weights.index(0.0)
    assert_close(out.image[row0 : row0 + 1], single_w0.image.numpy(), "batch row w=0 vs single run")


def test_zero_initialised_quality_adapter_reproduces_fixture(official):
    model, _, fixture = official
    adapted = attach_quality_adapter(copy.deepcopy(model))
    assert set(adapted.state_dict()) == set(model.state_dict()) | {"quality_adapter.weight"}
    with torch.no_grad():
        out = adapted(torch.from_numpy(fixture["input"]), w=torch.tensor([0.5]), quality=torch.tensor([0.3]))
    assert_close(out.image, fixture["out_w0.5"], "codeformer+q out_w0.5")
    assert_shared_outputs(out, fixture)
