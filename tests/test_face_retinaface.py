"""RetinaFace-R50: layout of the released checkpoint, anchors, decoding and the detector wrapper
(random weights: the released file needs a download, which tests never do)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqpfr.face.retinaface import RetinaFace, anchor_boxes, decode, detect_faces


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # a ResNet-50 on a loaded 2-core machine runs faster on one thread than on two contending ones
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def net() -> RetinaFace:
    torch.manual_seed(0)
    model = RetinaFace().eval()
    # random heads regress wild boxes; zero deltas keep every prediction on its anchor
    with torch.no_grad():
        for head in [*model.BboxHead, *model.LandmarkHead]:
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.zero_()
    return model


def test_state_dict_matches_the_released_file(net):
    state = net.state_dict()
    for key in ("body.layer4.2.bn3.running_var", "fpn.merge1.0.weight", "ssh3.conv7x7_3.1.bias",
                "ClassHead.2.conv1x1.weight", "BboxHead.0.conv1x1.bias", "LandmarkHead.1.conv1x1.weight"):
        assert key in state
    assert state["LandmarkHead.0.conv1x1.weight"].shape == (20, 256, 1, 1)
    # detection_Resnet50_Final.pth is 109,497,761 bytes: our tensors take all but ~0.1% of it
    # (the rest is the zip container and key names, ~200 bytes per tensor)
    tensor_bytes = sum(v.numel() * v.element_size() for v in state.values())
    assert 0 < 109_497_761 - tensor_bytes < 250 * len(state)


def test_anchors_cover_three_levels_of_two_sizes():
    anchors = anchor_boxes(840, 840)
    assert anchors.shape == (2 * (105 * 105 + 53 * 53 + 27 * 27), 4)
    np.testing.assert_allclose(anchors[0].numpy(), [4 / 840, 4 / 840, 16 / 840, 16 / 840], rtol=1e-6)
    np.testing.assert_allclose(anchors[1, 2].item(), 32 / 840, rtol=1e-6)
    np.testing.assert_allclose(anchors[-1].numpy(), [(26.5 * 32) / 840, (26.5 * 32) / 840, 512 / 840, 512 / 840], rtol=1e-6)


def test_zero_deltas_decode_to_the_anchors():
    anchors = anchor_boxes(64, 96)
    boxes, points = decode(anchors, torch.zeros(len(anchors), 4), torch.zeros(len(anchors), 10), 64, 96)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    np.testing.assert_allclose(centre.numpy(), (anchors[:, :2] * torch.tensor([96, 64])).numpy(), rtol=1e-5)
    np.testing.assert_allclose((boxes[:, 2] - boxes[:, 0]).numpy(), (anchors[:, 2] * 96).numpy(), rtol=1e-5)
    assert points.shape == (len(anchors), 5, 2)
    np.testing.assert_allclose(points[:, 3].numpy(), centre.numpy(), rtol=1e-5)


def test_forward_shapes_and_detection_output(net):
    with torch.no_grad():
        boxes, scores, landmarks = net(torch.zeros(1, 3, 96, 128))
    count = len(anchor_boxes(96, 128))
    assert boxes.shape == (1, count, 4) and scores.shape == (1, count) and landmarks.shape == (1, count, 10)
    assert float(scores.min()) >= 0 and float(scores.max()) <= 1
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    # threshold 0 keeps everything that survives NMS: each is a (box, score, 5 points) triple
    found = detect_faces(net, image, score_threshold=0.0)
    assert found and all(b.shape == (4,) and p.shape == (5, 2) and 0 <= s <= 1 for b, s, p in found)


def test_detector_wrapper_loads_a_local_checkpoint(tmp_path, net):
    from iqpfr.face.detect import DetectorUnavailable, RetinaFaceDetector

    path = tmp_path / "retinaface.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)  # DataParallel-style keys
    detector = RetinaFaceDetector(path, score_threshold=0.0, min_side=64, max_side=128)
    faces = detector.detect(np.zeros((100, 150, 3), np.uint8))
    assert all(f.landmarks.shape == (5, 2) and f.landmarks68 is None for f in faces)
    assert faces
    for face in faces:  # mapped back to the photo's pixels: anchor centres lie within a stride of it
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        assert 0 < cx < 150 + 32 and 0 < cy < 100 + 32

    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorUnavailable, match="broken.pth"):
        RetinaFaceDetector(broken)
