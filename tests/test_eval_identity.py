"""IDS (dlib face embeddings) separates identities; LMD is zero for identical faces and tracks shifts."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from conftest import shared_path

pytest.importorskip("dlib")

from iqpfr.eval import dlib_models  # noqa: E402
from iqpfr.eval.identity import angle_degrees, dlib_embedding, identity_distance  # noqa: E402
from iqpfr.eval.landmarks import landmark_distance  # noqa: E402
from iqpfr.io import read_rgb  # noqa: E402


def test_ids_separates_same_and_different_people():
    folder = shared_path("data", "lfw_gray_identity_subset")
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 48
    people = [f.name.rsplit("_", 1)[0] for f in files]
    embeddings = []
    detected = 0
    for f in files:
        img = read_rgb(f)
        box, found = dlib_models.face_box(img)
        detected += found
        embeddings.append(dlib_embedding(img, box))
    same_l2, diff_l2, same_deg, diff_deg = [], [], [], []
    for i, j in itertools.combinations(range(len(files)), 2):
        l2 = float(np.linalg.norm(embeddings[i] - embeddings[j]))
        deg = angle_degrees(embeddings[i], embeddings[j])
        (same_l2 if people[i] == people[j] else diff_l2).append(l2)
        (same_deg if people[i] == people[j] else diff_deg).append(deg)
    same_l2, diff_l2 = np.array(same_l2), np.array(diff_l2)
    assert len(same_l2) == 72 and len(diff_l2) == 1056
    assert detected == 48
    assert same_l2.mean() < diff_l2.mean() and np.mean(same_deg) < np.mean(diff_deg)
    # measured: mean L2 0.443 (same) vs 0.742 (different), 18.2 vs 30.8 degrees; accuracy 0.964 at 0.6
    accuracy = ((same_l2 < 0.6).sum() + (diff_l2 >= 0.6).sum()) / (len(same_l2) + len(diff_l2))
    assert accuracy > 0.9


def _face(size: int = 256) -> np.ndarray:
    path = sorted(shared_path("data", "gpen_ffhq10").glob("*.png"))[0]
    return cv2.resize(read_rgb(path), (size, size), interpolation=cv2.INTER_AREA)


def test_lmd_zero_for_identical_and_grows_with_a_known_shift():
    face = _face(256)
    assert landmark_distance(face, face) == 0.0
    distances = []
    for shift in (2, 4, 8):
        moved = cv2.warpAffine(face, np.float32([[1, 0, shift], [0, 1, 0]]), (256, 256), borderMode=cv2.BORDER_REPLICATE)
        distances.append(landmark_distance(moved, face))
    assert distances[0] < distances[1] < distances[2]
    # a shift of s px at 256 px is 2s px in 512-px units: the landmarks follow the face
    assert abs(distances[2] - 16.0) < 3.0, distances


def test_identity_distance_pair_protocol():
    face = _face(256)
    same = identity_distance(face, face)
    assert same["ids"] < 1e-3 and same["ids_l2"] < 1e-6
    blurred = cv2.GaussianBlur(face, (0, 0), 4)
    worse = identity_distance(blurred, face)
    assert worse["ids"] > same["ids"] and worse["ids_l2"] > 0


@pytest.fixture
def one_thread():
    # small convolutions on a shared 2-core runner are far faster single-threaded
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_arcface_ids_path_with_a_local_weight_file(tmp_path, one_thread):
    from iqpfr.cli import main
    from iqpfr.eval.arcface import ArcFaceResNet18, arcface_distances, load_arcface
    from iqpfr.io import write_rgb

    with pytest.raises(RuntimeError, match="ArcFace IDS needs"):
        load_arcface(offline=True)
    torch.manual_seed(0)
    net = ArcFaceResNet18()
    # published checkpoints were saved from DataParallel: keys carry "module."
    torch.save({f"module.{k}": v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()},
               tmp_path / "arcface_resnet18.pth")
    loaded = load_arcface(tmp_path / "arcface_resnet18.pth")
    face = _face(256)
    blurred = cv2.GaussianBlur(face, (0, 0), 6)
    same, other = arcface_distances(loaded, [face, blurred], [face, face])
    assert same["ids"] < 1e-3 and other["ids"] > same["ids"]
    write_rgb(tmp_path / "gt" / "a.png", face)
    write_rgb(tmp_path / "pred" / "a.png", blurred)
    out = tmp_path / "ids.csv"
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--metrics", "ids",
                 "--ids-model", "arcface", "--arcface", str(tmp_path / "arcface_resnet18.pth"), "-o", str(out),
                 "--no-plots"]) == 0
    assert abs(float(out.read_text().splitlines()[1].split(",")[1]) - other["ids"]) < 1e-4
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(RuntimeError):
        load_arcface(tmp_path / "bad.pth")
