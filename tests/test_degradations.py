"""The blind degradation model (iqpfr.data.degradations) and ``iqpfr degrade``."""

from __future__ import annotations

import csv
import dataclasses
import json

import cv2
import numpy as np
import pytest

from iqpfr.cli import main
from iqpfr.data.degradations import (
    PRESETS,
    DegradationConfig,
    DegradationParams,
    apply_degradation,
    degrade,
    gaussian_kernel,
    sample_params,
    sample_rng,
)


def _face_like(size: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth colour image with sharp edges (so blur and JPEG have something to change)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx * yy)], axis=2) * 200
    img[size // 4 : size // 2, size // 4 : 3 * size // 4] = [250, 30, 30]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _no_blur_no_resize(**kw) -> DegradationConfig:
    base = dict(blur_sigma=(0.1, 0.1), downsample=(1.0, 1.0), noise=(0.0, 0.0), jpeg_quality=(100, 100))
    base.update(kw)
    return DegradationConfig(**base)


def test_same_seed_same_output_and_different_seed_differs():
    img = _face_like()
    a, pa = degrade(img, PRESETS["large"], sample_rng(7, 1, 3))
    b, pb = degrade(img, PRESETS["large"], sample_rng(7, 1, 3))
    c, pc = degrade(img, PRESETS["large"], sample_rng(7, 1, 4))
    assert np.array_equal(a, b) and pa == pb
    assert pa != pc and not np.array_equal(a, c)


def test_sample_rng_independent_of_worker_split():
    # the generator of sample i depends on (seed, epoch, i) only, not on what was drawn before
    first = [sample_params(PRESETS["large"], sample_rng(0, 2, i)) for i in range(6)]
    interleaved = [sample_params(PRESETS["large"], sample_rng(0, 2, i)) for i in (5, 3, 1, 4, 2, 0)]
    assert first == [interleaved[k] for k in (5, 2, 4, 1, 3, 0)]


@pytest.mark.parametrize("name", ["large", "small", "celeba-x8", "celeba-x16", "color"])
def test_sampled_parameters_respect_the_preset_ranges(name):
    cfg = PRESETS[name]
    rng = np.random.default_rng(0)
    params = [sample_params(cfg, rng) for _ in range(400)]
    sig = np.array([[p.sigma_x, p.sigma_y] for p in params])
    assert sig.min() >= cfg.blur_sigma[0] and sig.max() <= cfg.blur_sigma[1]
    scales = np.array([p.scale for p in params])
    assert scales.min() >= cfg.downsample[0] and scales.max() <= cfg.downsample[1]
    noise = np.array([p.noise for p in params])
    assert noise.min() >= cfg.noise[0] and noise.max() <= cfg.noise[1]
    q = np.array([p.jpeg_quality for p in params])
    assert q.min() >= cfg.jpeg_quality[0] and q.max() <= cfg.jpeg_quality[1]
    assert q.dtype.kind == "i"
    # both kernel types occur about half the time; isotropic kernels are unrotated
    iso = [p for p in params if p.kernel_type == "iso"]
    assert 0.4 < len(iso) / len(params) < 0.6
    assert all(p.sigma_x == p.sigma_y and p.theta == 0.0 for p in iso)
    thetas = [p.theta for p in params if p.kernel_type == "aniso"]
    assert min(thetas) >= -np.pi and max(thetas) <= np.pi and np.ptp(thetas) > 3
    strengths = np.array([p.strength for p in params])
    assert strengths.min() >= 0 and strengths.max() <= 1
    if name.startswith("celeba"):
        assert np.all(scales == cfg.downsample[0])


def test_small_preset_is_milder_than_large():
    rng = np.random.default_rng(1)
    large = np.mean([sample_params(PRESETS["large"], rng).strength for _ in range(300)])
    small = np.mean([sample_params(PRESETS["small"], rng).strength for _ in range(300)])
    assert small < large


def test_output_shape_dtype_and_degradation_happens():
    img = _face_like(96)
    for name in PRESETS:
        lq, params = degrade(img, PRESETS[name], sample_rng(0, 0, 0))
        assert lq.shape == img.shape and lq.dtype == np.uint8
        assert isinstance(params, DegradationParams)
        assert np.abs(lq.astype(int) - img.astype(int)).mean() > 2


def test_non_square_and_tiny_downsampled_sizes():
    img = _face_like(64)[:, :50]
    lq, _ = degrade(img, DegradationConfig(downsample=(30.0, 30.0)), sample_rng(0))
    assert lq.shape == img.shape


def test_kernel_is_normalised_and_anisotropic_kernels_rotate():
    k = gaussian_kernel(41, 3.0, 3.0, 0.0)
    assert k.shape == (41, 41) and abs(k.sum() - 1) < 1e-5
    assert np.allclose(k, k.T, atol=1e-7)
    horizontal = gaussian_kernel(41, 6.0, 1.0, 0.0)
    vertical = gaussian_kernel(41, 6.0, 1.0, np.pi / 2)
    assert horizontal[20, 30] > 10 * horizontal[30, 20]
    assert np.allclose(horizontal, vertical.T, atol=1e-6)


def test_noise_is_applied_with_the_stated_sigma():
    flat = np.full((128, 128, 3), 128, np.uint8)
    cfg = _no_blur_no_resize(noise=(10.0, 10.0))
    lq, params = degrade(flat, cfg, sample_rng(0))
    assert params.noise == 10.0
    # independent per-channel noise of std delta: the luma keeps std delta*|(0.299, 0.587, 0.114)|
    # (q=100 JPEG leaves luma intact but averages chroma, so luma is the quantity to check)
    luma_std = (lq.astype(float) @ [0.299, 0.587, 0.114]).std()
    assert abs(luma_std - 10.0 * np.linalg.norm([0.299, 0.587, 0.114])) < 0.4


def test_jpeg_is_applied():
    img = _face_like(128)
    params_hi = sample_params(_no_blur_no_resize(), sample_rng(0))
    params_lo = dataclasses.replace(params_hi, jpeg_quality=10)
    hi = apply_degradation(img, params_hi)
    lo = apply_degradation(img, params_lo)
    # JPEG-10 shows blocking: identical to OpenCV's own JPEG at that quality, far from q=100
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 10])
    ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(lo.astype(int) - ref.astype(int)).max() <= 2
    assert np.abs(lo.astype(int) - img.astype(int)).mean() > 2 * np.abs(hi.astype(int) - img.astype(int)).mean()


def test_downsampling_removes_detail():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    lq, _ = degrade(img, _no_blur_no_resize(downsample=(8.0, 8.0)), sample_rng(0))
    # high-frequency noise is gone after x8 down- and up-sampling
    assert lq.astype(float).std() < 0.3 * img.astype(float).std()


def test_gray_and_color_options():
    img = _face_like(64)
    gray, p = degrade(img, _no_blur_no_resize(gray_prob=1.0), sample_rng(0))
    assert p.gray and np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    shifted, p = degrade(img, _no_blur_no_resize(color_jitter_prob=1.0), sample_rng(0))
    assert p.color_shift is not None and len(p.color_shift) == 3
    means = shifted.reshape(-1, 3).mean(0) - img.reshape(-1, 3).mean(0)
    assert np.all(np.sign(np.round(means)) == np.sign(np.round(p.color_shift)))
    jittered, p = degrade(img, _no_blur_no_resize(photometric_jitter_prob=1.0), sample_rng(3))
    assert p.photometric is not None and sorted(p.photometric["order"]) == [0, 1, 2, 3]
    assert np.abs(jittered.astype(int) - img.astype(int)).mean() > 1


def test_bad_inputs_and_configs_raise():
    with pytest.raises(ValueError, match="uint8 RGB"):
        degrade(np.zeros((8, 8), np.uint8), PRESETS["large"], sample_rng(0))
    with pytest.raises(ValueError, match="uint8 RGB"):
        degrade(np.zeros((8, 8, 3), np.float32), PRESETS["large"], sample_rng(0))
    with pytest.raises(ValueError, match="odd"):
        DegradationConfig(kernel_size=40)
    with pytest.raises(ValueError, match="jpeg_quality"):
        DegradationConfig(jpeg_quality=(30, 120))
    with pytest.raises(ValueError, match="unknown degradation preset"):
        DegradationConfig.preset("huge")
    assert DegradationConfig.preset("large", noise=(1.0, 2.0)).noise == (1.0, 2.0)


def test_cli_writes_lq_copies_and_params(tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_face_like(64, seed=i)).save(src / f"face{i}.jpg", quality=95)
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    rc = main(["degrade", str(src), "-o", str(out), "--preset", "celeba-x8", "--seed", "0"])
    assert rc == 1  # one bad file -> non-zero exit, the rest written
    assert "broken.png" in capsys.readouterr().err
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["face0.png", "face1.png", "face2.png"]
    for name in written:
        assert np.asarray(Image.open(out / name)).shape == (64, 64, 3)
    rows = list(csv.DictReader(open(out / "params.csv")))
    assert [r["file"] for r in rows] == written and all(float(r["scale"]) == 8.0 for r in rows)
    assert len(json.loads((out / "params.json").read_text())) == 3
    before = (out / "face0.png").read_bytes()
    # a second run skips existing files and reproduces the same bytes when overwriting
    (src / "broken.png").unlink()
    assert main(["degrade", str(src), "-o", str(out), "--preset", "celeba-x8"]) == 0
    assert main(["degrade", str(src / "face0.jpg"), "-o", str(out), "--preset", "celeba-x8", "--overwrite"]) == 0
    assert (out / "face0.png").read_bytes() == before
    assert len(json.loads((out / "params.json").read_text())) == 3
    assert main(["degrade", str(tmp_path / "missing"), "-o", str(out)]) == 2
