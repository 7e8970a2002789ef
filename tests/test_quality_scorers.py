"""The QualityScorer interface: factory, shapes, input checks, batching, gradients, BRISQUE models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqpfr.quality import create_scorer, list_scorers


def _faces(b: int = 2, size: int = 128, seed: int = 0) -> torch.Tensor:
    """Smooth random 'images' with some texture, values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    x = x + 0.05 * torch.rand(b, 3, size, size, generator=g)
    return x.clamp(0, 1)


def test_list_scorers_names_builtins():
    assert {"niqe", "piqe", "brisque", "face-iqa"} <= set(list_scorers())


@pytest.mark.parametrize("name", ["niqe", "piqe", "face-iqa"])
def test_scorer_interface(name):
    s = create_scorer(name)
    x = _faces(3)
    out = s.score(x)
    assert out.shape == (3,) and out.dtype == x.dtype and torch.isfinite(out).all()
    assert isinstance(s.higher_better, bool) and isinstance(s.differentiable, bool)
    lo, hi = s.range
    assert lo < hi
    # batching does not change a score
    single = torch.cat([s.score(x[i: i + 1]) for i in range(3)])
    assert torch.allclose(out, single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["niqe", "piqe", "face-iqa"])
def test_scorer_rejects_bad_input(name):
    s = create_scorer(name)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s.score(_faces(1) * 2 - 1)  # [-1, 1] images: the IQPIR pitfall
    with pytest.raises(ValueError, match="shape"):
        s.score(torch.rand(3, 128, 128))


@pytest.mark.parametrize("name", ["niqe", "piqe", "face-iqa"])
def test_gradients_reach_pixels(name):
    s = create_scorer(name)
    assert s.differentiable
    x = _faces(2, seed=1).double().requires_grad_(True) if name != "face-iqa" else _faces(2, seed=1).requires_grad_(True)
    s.score(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_brisque_features_gradients_and_shape():
    from iqpfr.quality.brisque import brisque_features

    x = _faces(2, seed=2).double().requires_grad_(True)
    f = brisque_features(x)
    assert f.shape == (2, 36) and torch.isfinite(f).all()
    f.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_brisque_without_model_says_what_is_missing():
    with pytest.raises(FileNotFoundError, match="SVR model"):
        create_scorer("brisque")


def test_brisque_libsvm_model_files(tmp_path):
    """A tiny libsvm model in the release's text format gives the RBF-SVR value computed by hand."""
    from iqpfr.quality.brisque import brisque_features

    x = _faces(1, seed=3).double()
    feats = brisque_features(x)[0].numpy()
    fmin, fmax = feats - 1.0, feats + 1.0  # the image maps to the middle of [-1, 1]: all zeros
    (tmp_path / "allrange").write_text("x\n-1 1\n" + "".join(f"{i + 1} {a} {b}\n" for i, (a, b) in enumerate(zip(fmin, fmax))))
    sv1 = " ".join(f"{i + 1}:0.5" for i in range(36))
    (tmp_path / "allmodel").write_text("svm_type epsilon_svr\nkernel_type rbf\ngamma 0.05\nnr_class 2\n"
                                       f"total_sv 2\nrho -3.5\nSV\n2.0 {sv1}\n-1.0 1:0.25\n")
    s = create_scorer("brisque", model_path=tmp_path / "allmodel")
    expected = 2.0 * np.exp(-0.05 * 36 * 0.25) - 1.0 * np.exp(-0.05 * 0.0625) + 3.5
    assert s.score(x).item() == pytest.approx(expected, rel=1e-6)
    assert not s.higher_better


def test_brisque_npz_model(tmp_path):
    sv = np.zeros((1, 36))
    np.savez(tmp_path / "m.npz", sv=sv, sv_coef=np.array([1.0]), rho=np.array(0.0), gamma=np.array(0.0))
    s = create_scorer("brisque", model_path=tmp_path / "m.npz")
    assert s.score(_faces(2)).tolist() == pytest.approx([1.0, 1.0])


def test_unknown_metric_error_is_clear(monkeypatch):
    import iqpfr.quality.pyiqa_backend as backend

    monkeypatch.setattr(backend, "pyiqa_available", lambda: False)
    with pytest.raises(ValueError, match="unknown quality metric 'nosuch'.*pyiqa"):
        create_scorer("nosuch")


def test_niqe_rejects_too_small_image():
    with pytest.raises(ValueError, match="96x96"):
        create_scorer("niqe").score(torch.rand(1, 3, 64, 64))


def test_face_iqa_any_input_size():
    s = create_scorer("face-iqa")
    for size in (64, 200, 512):
        assert s.score(_faces(1, size=size)).shape == (1,)
    assert not any(p.requires_grad for p in s.parameters())


def test_ensemble_module_normalises_and_differentiates():
    from iqpfr.quality import QualityEnsemble

    ens = QualityEnsemble([create_scorer("piqe"), create_scorer("face-iqa")], ranges={"piqe": (0.0, 100.0)})
    assert ens.differentiable and ens.higher_better
    x = _faces(2, seed=4).requires_grad_(True)
    out = ens.score(x)
    piqe = create_scorer("piqe").score(x.detach())
    face = create_scorer("face-iqa").score(x.detach())
    lo, hi = create_scorer("face-iqa").range
    expected = ((100.0 - piqe) / (100.0 + 1e-6) + (face - lo) / (hi - lo + 1e-6)) / 2
    assert torch.allclose(out.detach(), expected, atol=1e-5)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_brisque_scorer_gradients(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", sv=rng.normal(size=(3, 36)), sv_coef=np.array([1.0, -0.5, 2.0]),
             rho=np.array(0.1), gamma=np.array(0.01))
    s = create_scorer("brisque", model_path=tmp_path / "m.npz")
    assert s.differentiable
    x = _faces(1, seed=5).double().requires_grad_(True)
    s.score(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ensemble_ranges_from_score_sidecar(tmp_path):
    import json

    from iqpfr.quality import load_ranges

    side = tmp_path / "s.csv.json"
    side.write_text(json.dumps({"normalisation": {"niqe": [3.0, 12.0], "piqe": None}}))
    assert load_ranges(side) == {"niqe": (3.0, 12.0)}
