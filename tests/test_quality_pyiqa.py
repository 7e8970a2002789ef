"""The optional pyiqa backend, with a fake ``pyiqa`` module (the real one is not installed in CI)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from iqpfr.quality import create_scorer
from iqpfr.quality.pyiqa_backend import PyIQAUnavailableError


class _FakeMetric(torch.nn.Module):
    def __init__(self, name, as_loss):
        super().__init__()
        self.name, self.as_loss = name, as_loss
        self.lower_better = name == "niqe"
        self.score_range = "~0, ~100"
        self.seen = []

    def forward(self, x):
        self.seen.append((float(x.detach().min()), float(x.detach().max())))
        return x.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1) * 100


@pytest.fixture
def fake_pyiqa(monkeypatch):
    mod = types.ModuleType("pyiqa")
    mod.__version__ = "0.1.99-fake"
    mod.created = []

    def create_metric(name, as_loss=False, device=None, **kw):
        if name == "needs_weights":
            raise OSError("could not download https://example.invalid/weights.pth")
        m = _FakeMetric(name, as_loss)
        mod.created.append((name, as_loss, kw))
        return m

    mod.create_metric = create_metric
    mod.list_models = lambda: ["musiq", "topiq_nr-face", "niqe", "needs_weights"]
    monkeypatch.setitem(sys.modules, "pyiqa", mod)
    return mod


def test_missing_pyiqa_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # makes `import pyiqa` raise ImportError
    with pytest.raises(PyIQAUnavailableError, match=r"pip install 'iqpfr\[iqa\]'"):
        create_scorer("pyiqa:musiq")


def test_name_plumbing_range_and_version(fake_pyiqa):
    s = create_scorer("pyiqa:topiq_nr-face", as_loss=True)
    assert s.name == "pyiqa:topiq_nr-face" and s.higher_better and s.differentiable
    assert s.range == (0.0, 100.0)
    assert s.extra_info()["pyiqa_version"] == "0.1.99-fake"
    assert fake_pyiqa.created[-1][:2] == ("topiq_nr-face", True)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = s.score(x)
    assert out.shape == (2,)
    lo, hi = s.metric.seen[-1]
    assert 0.0 <= lo and hi <= 1.0  # images reach pyiqa in [0, 1]
    out.sum().backward()
    assert x.grad is not None


def test_lower_better_and_no_grad_without_as_loss(fake_pyiqa):
    s = create_scorer("pyiqa:niqe")
    assert not s.higher_better and not s.differentiable
    assert not s.score(torch.rand(1, 3, 16, 16, requires_grad=True)).requires_grad


def test_unknown_pyiqa_metric(fake_pyiqa):
    with pytest.raises(ValueError, match="no metric 'nosuch'"):
        create_scorer("pyiqa:nosuch")


def test_missing_weights_error_names_metric(fake_pyiqa):
    with pytest.raises(PyIQAUnavailableError, match="needs_weights.*weights"):
        create_scorer("pyiqa:needs_weights")


def test_bare_name_goes_to_pyiqa_when_installed(fake_pyiqa, monkeypatch):
    import iqpfr.quality.pyiqa_backend as backend

    monkeypatch.setattr(backend, "pyiqa_available", lambda: True)
    assert create_scorer("musiq").name == "pyiqa:musiq"
