"""A second face-identity network, independent of dlib: the 512-d MobileFaceNet-style ONNX model of
the npm package ``faceplugin-face-recognition-js`` 0.0.1 (MIT), run with onnxruntime.

Identity checks that use only one embedding network can be gamed by, or simply share the blind
spots of, that network; this one is a different architecture trained on different data. Input:
a 112x112 RGB face aligned by 5 points (eye centres, nose tip, mouth corners) to the standard
112-px ArcFace template, scaled as (x - 127) / 128. The npm tarball comes from the zoo
(``faceplugin-face-recognition-js``, sha256-pinned); the ONNX member is read from it in memory and
checked against its own pinned sha256. Distances are cosine distances (1 - cos), in [0, 2].
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np

ZOO_NAME = "faceplugin-face-recognition-js"
MEMBER = "package/model/fr_feature.onnx"
MEMBER_SHA256 = "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"
INPUT_SIDE = 112
# the 112x112 ArcFace template: subject's right eye (image left), left eye, nose tip, mouth corners
TEMPLATE_112 = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041],
])


def read_model_bytes(archive: str | os.PathLike, member: str = MEMBER, sha256: str | None = MEMBER_SHA256) -> bytes:
    """The ONNX bytes of ``member`` inside a ``.tgz``; ValueError naming the file if absent or altered."""
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            handle = tar.extractfile(member)
            if handle is None:
                raise KeyError(member)
            data = handle.read()
    except (OSError, tarfile.TarError, KeyError, EOFError) as exc:
        raise ValueError(f"{archive}: cannot read {member} ({type(exc).__name__}: {exc})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{archive}: {member} does not have the pinned sha256 {sha256}")
    return data


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """(5, 2) eye centres, nose tip and mouth corners from dlib's 68 points (template order)."""
    p = np.asarray(landmarks68, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


class MobileFaceEmbedder:
    """``embed(image, landmarks68) -> (512,)`` unit vector; ``distance(a, b)`` = 1 - cos."""

    def __init__(self, model: bytes | str | os.PathLike | None = None, *, offline: bool = False):
        import onnxruntime as ort

        if model is None:
            from iqpfr.weights import resolve_weights

            model = read_model_bytes(resolve_weights(ZOO_NAME, offline=offline))
        elif not isinstance(model, bytes):
            path = Path(model)
            model = read_model_bytes(path) if path.suffix in (".tgz", ".gz") else path.read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @staticmethod
    def align(image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """(112, 112, 3) uint8 face aligned to the template (similarity fit of the 5 points)."""
        import cv2

        from iqpfr.face.align import estimate_similarity

        affine = estimate_similarity(five_points(landmarks68), TEMPLATE_112)
        return cv2.warpAffine(np.ascontiguousarray(image), affine, (INPUT_SIDE, INPUT_SIDE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)

    def embed_aligned(self, faces: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB -> (N, 512) unit vectors."""
        x = (np.asarray(faces, np.float32) - 127.0) / 128.0
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        out = np.concatenate([self.session.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(len(x))])
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """(512,) unit embedding of the face with these 68 landmarks in a uint8 RGB image."""
        return self.embed_aligned(self.align(image, landmarks68)[None])[0]

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
