"""ONNX export: onnxruntime matches PyTorch within 1e-3 for every network (tiny presets), w and quality
are live graph inputs, the batch axis is dynamic, and the CLI never overwrites."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import iqpfr
from iqpfr.cli import main as cli_main
from iqpfr.export import CHECK_TOLERANCE, export_onnx

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _feed(batch: int, w: float, quality: float, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "lq": rng.uniform(-1, 1, size=(batch, 3, 64, 64)).astype(np.float32),
        "w": np.full(batch, w, np.float32),
        "quality": np.full(batch, quality, np.float32),
    }


@pytest.mark.parametrize("name", ["codeformer-tiny", "gfpgan-tiny", "iqpfr-tiny"])
def test_export_matches_pytorch(tmp_path, name):
    torch.manual_seed(0)
    model = iqpfr.create_model(name).eval()
    report = export_onnx(model, tmp_path / "m.onnx", batch=2, check=True)
    assert report.checked_batches == (2, 3)  # traced batch and another one: the axis is dynamic
    assert report.max_abs_diff is not None and report.max_abs_diff <= CHECK_TOLERANCE
    assert report.passed

    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["lq", "w", "quality"]
    low, high = (session.run(None, _feed(1, w, 0.9))[0] for w in (0.0, 1.0))
    if name == "gfpgan-tiny":  # ignores w, as in PyTorch
        np.testing.assert_array_equal(low, high)
    else:  # w is a live input, not a constant baked in at trace time
        assert np.abs(low - high).max() > 1e-3


def test_quality_is_a_live_input(tmp_path):
    torch.manual_seed(0)
    model = iqpfr.create_model("iqpfr-tiny").eval()
    with torch.no_grad():
        model.quality_embed.weight.normal_()  # make the quality condition matter
    export_onnx(model, tmp_path / "q.onnx")
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    feeds = [_feed(1, 0.5, q) for q in (0.1, 0.95)]
    out_low, out_high = (session.run(None, f)[0] for f in feeds)
    assert np.abs(out_low - out_high).max() > 1e-3
    with torch.no_grad():
        expected = model(
            torch.from_numpy(feeds[1]["lq"]), w=torch.tensor([0.5]), quality=torch.tensor([0.95])
        )
    assert np.abs(out_high - expected.image.numpy()).max() <= CHECK_TOLERANCE


def test_cli_export_check_and_no_overwrite(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    args = ["export", "onnx", "gfpgan-tiny", "--random-init", "-o", str(out), "--check"]
    assert cli_main(args) == 0
    assert "OK" in capsys.readouterr().out
    before = out.read_bytes()
    assert cli_main(args) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    # a preset without weights is refused instead of silently exporting random weights
    assert cli_main(["export", "onnx", "gfpgan-tiny", "-o", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()
    assert cli_main(["export", "onnx", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "y.onnx")]) == 2
    assert "missing.pth" in capsys.readouterr().err


def test_cli_exports_a_saved_checkpoint(tmp_path):
    from iqpfr.weights.checkpoint import save_model

    model = iqpfr.create_model("codeformer-tiny").eval()
    save_model(model, tmp_path / "cf.safetensors")
    out = tmp_path / "cf.onnx"
    assert (
        cli_main(["export", "onnx", str(tmp_path / "cf.safetensors"), "-o", str(out), "--static-batch"]) == 0
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 64, 64]
    feed = _feed(1, 0.5, 0.9)
    with torch.no_grad():
        expected = model(torch.from_numpy(feed["lq"]), w=torch.tensor([0.5])).image.numpy()
    assert np.abs(session.run(None, feed)[0] - expected).max() <= CHECK_TOLERANCE


def test_onnxruntime_inference_backend_matches_eager():
    from iqpfr.inference import prepare_for_inference

    torch.manual_seed(0)
    model = iqpfr.create_model("codeformer-tiny").eval()
    lq = torch.rand(3, 3, 64, 64) * 2 - 1
    w = torch.tensor([0.0, 0.5, 1.0])
    with torch.no_grad():
        expected, expected_default = model(lq, w=w).image, model(lq).image
    runner = prepare_for_inference(model, device="cpu", backend="onnxruntime", batch_size=2)
    assert (runner(lq, w=w).image - expected).abs().max().item() <= 1e-4  # chunks of 2 + 1, per-sample w
    assert (runner(lq).image - expected_default).abs().max().item() <= 1e-4  # the network's default w
    with pytest.raises(ValueError, match="onnxruntime"):
        prepare_for_inference(model, device="cpu", backend="onnxruntime", precision="bf16")
    # faces in parallel chunks (one thread each): same outputs, in order, per-sample w kept
    parallel = prepare_for_inference(model, device="cpu", backend="onnxruntime", batch_size=1, workers=2)
    assert parallel.settings.label() == "onnxruntime fp32 b1 x2"
    assert (parallel(lq, w=w).image - expected).abs().max().item() <= 1e-4
    with pytest.raises(ValueError, match="workers"):
        prepare_for_inference(model, device="cpu", workers=2)
