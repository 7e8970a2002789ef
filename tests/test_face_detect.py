"""Face detection backends: dlib HOG/CNN on real photos, 5-point mode, RetinaFace's clear refusal."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from conftest import shared_path
from iqpfr.face.align import FFHQ_TEMPLATE_512, alignment_affine, transform_points
from iqpfr.face.detect import DetectorUnavailable, DlibDetector, create_detector
from iqpfr.face.pipeline import FaceFilter, crop_faces
from iqpfr.io import read_image

pytest.importorskip("dlib")

ASTRONAUT = importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"
# faces per photo in codeformer_whole_imgs, as counted by dlib HOG in its SOURCE.md
EXPECTED_FACES = {"00.jpg": 4, "01.jpg": 4, "02.png": 4, "03.jpg": 1, "04.jpg": 1, "05.jpg": 1, "06.png": 2}


@pytest.fixture(scope="module")
def hog() -> DlibDetector:
    return DlibDetector("hog")


def test_hog_finds_the_astronaut_with_sensible_landmarks(hog):
    image = read_image(str(ASTRONAUT))
    faces = hog.detect(image.rgb8())
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = face.box
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200
    assert face.landmarks68 is not None and face.landmarks68.shape == (68, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    # aligned, the landmarks land near the FFHQ template (the fit residual of a real face)
    residual = transform_points(face.landmarks, alignment_affine(face.landmarks, 512)) - FFHQ_TEMPLATE_512
    assert np.abs(residual).max() < 25


def test_five_point_model_agrees_with_68_points(hog):
    rgb = read_image(str(ASTRONAUT)).rgb8()
    five = DlibDetector("hog", landmarks=5).detect(rgb)[0]
    full = hog.detect(rgb)[0]
    assert five.landmarks68 is None
    eye_distance = np.linalg.norm(full.landmarks[1] - full.landmarks[0])
    assert np.abs(five.landmarks[:2] - full.landmarks[:2]).max() < 0.15 * eye_distance


def test_no_face_in_noise(hog):
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    assert hog.detect(noise) == []


def test_cnn_detector_on_one_small_image():
    import cv2

    rgb = cv2.resize(read_image(str(ASTRONAUT)).rgb8(), (256, 256), interpolation=cv2.INTER_AREA)
    faces = DlibDetector("cnn").detect(rgb)
    assert len(faces) == 1 and faces[0].landmarks68 is not None
    x0, y0, x1, y1 = faces[0].box
    assert 75 < (x0 + x1) / 2 < 150 and 30 < (y0 + y1) / 2 < 100


def test_face_filters():
    from iqpfr.face.detect import DetectedFace

    def face(x, size):
        return DetectedFace(np.array([x, 10.0, x + size, 10.0 + size]), 1.0, np.zeros((5, 2)))

    faces = [face(0, 20), face(100, 60), face(180, 30)]
    assert len(FaceFilter().select(faces, (240, 100))[0]) == 3
    kept, notes = FaceFilter(min_size=25).select(faces, (240, 100))
    assert [f.box[0] for f in kept] == [100, 180] and "smaller than 25" in notes[0]
    assert FaceFilter(largest=True).select(faces, (240, 100))[0][0].box[0] == 100
    assert FaceFilter(only_center=True).select(faces, (400, 100))[0][0].box[0] == 180
    assert [f.box[0] for f in FaceFilter(max_faces=2).select(faces, (240, 100))[0]] == [100, 180]
    assert [f.box[0] for f in FaceFilter(index=(0, 2)).select(faces, (240, 100))[0]] == [0, 180]


def test_retinaface_without_weights_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("IQPFR_OFFLINE", "1")
    with pytest.raises(DetectorUnavailable, match="retinaface: weights unavailable"):
        create_detector("retinaface")
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("yolo")


def test_hog_finds_every_face_of_the_codeformer_photos(hog):
    folder = shared_path("data", "codeformer_whole_imgs")
    counts = {name: len(hog.detect(read_image(folder / name).rgb8())) for name in EXPECTED_FACES}
    assert counts == EXPECTED_FACES


def test_our_crops_match_the_reference_dlib_alignment(hog):
    """Our similarity alignment and the FFHQ quad recipe give nearly the same 512 crops."""
    from PIL import Image

    photos = shared_path("data", "codeformer_whole_imgs")
    reference = shared_path("data", "codeformer_whole_aligned_dlib")
    for name in ("01.jpg", "05.jpg"):
        image = read_image(photos / name)
        for record in crop_faces(image, hog.detect(image.rgb8()), 512):
            ref = np.asarray(Image.open(reference / f"{name[:2]}_face{record.index:02d}.jpg").convert("L"), np.float32)
            ours = record.crop @ np.array([0.299, 0.587, 0.114], np.float32)
            a = ours[128:384, 128:384] - ours[128:384, 128:384].mean()
            b = ref[128:384, 128:384] - ref[128:384, 128:384].mean()
            assert (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()) > 0.75
