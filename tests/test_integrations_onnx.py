"""`iqpfr export onnx --io-names input,weight`: the layout facefusion / ReActor-style runners feed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra")
pytest.importorskip("onnx", reason="needs the onnx extra")

from iqpfr.cli import main  # noqa: E402
from iqpfr.models.factory import create_model  # noqa: E402
from iqpfr.weights.checkpoint import load_model, save_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_model(create_model("iqpfr-tiny").eval(), tmp_path_factory.mktemp("m") / "tiny.safetensors")


def _facefusion_run(session, crop: np.ndarray, weight: float) -> np.ndarray:
    """What facefusion's enhancer does: fill the inputs named input / weight, take output[0][0]."""
    feeds = {}
    for node in session.get_inputs():
        if node.name == "input":
            feeds[node.name] = crop
        if node.name == "weight":
            feeds[node.name] = np.array([weight]).astype(np.double)
    return session.run(None, feeds)[0][0]


def test_facefusion_layout_matches_pytorch(tiny_file, tmp_path, capsys):
    out = tmp_path / "ff.onnx"
    assert main(["export", "onnx", str(tiny_file), "-o", str(out), "--io-names", "input,weight", "--check"]) == 0
    assert "OK" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input", "weight"]
    assert session.get_inputs()[1].type == "tensor(double)" and session.get_outputs()[0].name == "output"
    model = load_model(tiny_file)
    crop = (np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32) * 2 - 1)
    results = {}
    for w in (0.0, 1.0):
        got = _facefusion_run(session, crop, w)
        with torch.no_grad():
            expected = model(torch.from_numpy(crop), w=torch.tensor([w]), quality=torch.tensor([0.9])).image[0].numpy()
        assert got.shape == (3, 64, 64) and np.abs(got - expected).max() <= 1e-3
        results[w] = got
    assert np.abs(results[0.0] - results[1.0]).max() > 1e-4  # the weight input is wired to w


def test_input_only_layout_and_crop_size(tiny_file, tmp_path):
    out = tmp_path / "in.onnx"
    assert main(["export", "onnx", str(tiny_file), "-o", str(out), "--io-names", "input", "--io-size", "128",
                 "--fidelity", "0.7", "--check"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    crop = np.zeros((2, 3, 128, 128), dtype=np.float32)
    assert session.run(None, {"input": crop})[0].shape == (2, 3, 128, 128)


def test_bad_io_names_are_one_line_errors(tiny_file, tmp_path, capsys):
    code = main(["export", "onnx", str(tiny_file), "-o", str(tmp_path / "x.onnx"), "--io-names", "input,input"])
    assert code == 2 and "io_names" in capsys.readouterr().err
    code = main(["export", "onnx", str(tiny_file), "-o", str(tmp_path / "y.onnx"), "--io-names", "input",
                 "--io-size", "100"])
    assert code == 2 and "multiple" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()
