"""FID / KID maths against closed forms, the FID Inception and LPIPS networks (no published weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from iqpfr.eval.fid import (
    FIDInceptionV3,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    load_fid_inception,
    load_reference,
    polynomial_mmd2,
    save_statistics,
)
from iqpfr.eval.lpips import LAYER_CHANNELS, LPIPSVGG, load_lpips_vgg


@pytest.fixture
def one_thread():
    # small convolutions on a shared 2-core runner are far faster single-threaded
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
    # diagonal covariances: sum (s1 + s2 - 2 sqrt(s1 s2)) = sum (sqrt s1 - sqrt s2)^2
    expected = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert abs(frechet_distance(mu1, s1, mu2, s2) - expected) < 1e-10
    rng = np.random.default_rng(0)
    a, b = _random_spd(rng, 6), _random_spd(rng, 6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    reference = float(np.sum((m1 - m2) ** 2) + np.trace(a + b - 2 * np.real(sqrtm(a @ b))))
    assert abs(frechet_distance(m1, a, m2, b) - reference) < 1e-8
    assert abs(frechet_distance(m1, a, m1, a)) < 1e-8
    # singular covariance (fewer samples than dimensions) stays finite and non-negative
    few = rng.normal(size=(3, 10))
    assert np.isfinite(fid_from_features(few, few + 1.0)) and fid_from_features(few, few) > -1e-5


def test_fid_of_sampled_gaussians_approaches_the_closed_form():
    rng = np.random.default_rng(1)
    d = 4
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    x = rng.multivariate_normal(mu1, s1, size=40000)
    y = rng.multivariate_normal(mu2, s2, size=40000)
    exact = frechet_distance(mu1, s1, mu2, s2)
    assert abs(fid_from_features(x, y) - exact) < 0.03 * exact + 0.01


def test_kid_estimator_matches_naive_sum_and_1d_closed_form():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.3, 1.0, size=(25, 5))
    k = lambda a, b: (a @ b / 5 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(30) for j in range(30) if i != j) / (30 * 29)
    yy = sum(k(y[i], y[j]) for i in range(25) for j in range(25) if i != j) / (25 * 24)
    xy = sum(k(x[i], y[j]) for i in range(30) for j in range(25)) / (30 * 25)
    assert abs(polynomial_mmd2(x, y) - (xx + yy - 2 * xy)) < 1e-9

    # 1-D, x ~ N(a, s^2), y ~ N(b, s^2): E (uv + 1)^3 = 1 + 3E[u]E[v] + 3E[u^2]E[v^2] + E[u^3]E[v^3]
    def expected_kernel(a, b, s):
        return 1 + 3 * a * b + 3 * (a * a + s * s) * (b * b + s * s) + (a**3 + 3 * a * s * s) * (b**3 + 3 * b * s * s)

    a, b, s = 0.0, 1.0, 0.3
    exact = expected_kernel(a, a, s) + expected_kernel(b, b, s) - 2 * expected_kernel(a, b, s)
    xs, ys = rng.normal(a, s, size=(3000, 1)), rng.normal(b, s, size=(3000, 1))
    mean, std = kernel_inception_distance(xs, ys, subsets=6, subset_size=1500)
    assert abs(mean - exact) < 0.05 * exact, (mean, exact)  # estimator std here is ~2% of the value
    same, same_std = kernel_inception_distance(xs, rng.normal(a, s, size=(3000, 1)), subsets=6, subset_size=1500)
    assert abs(same) < 0.01 * exact and std > 0 and same_std > 0


def test_statistics_round_trip(tmp_path):
    feats = np.random.default_rng(3).normal(size=(20, 8))
    path = save_statistics(tmp_path / "ref.npz", feats)
    mu, sigma, back = load_reference(path)
    assert np.allclose(mu, feats.mean(0)) and np.allclose(sigma, np.cov(feats, rowvar=False))
    assert np.allclose(back, feats, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(feats[:1])


def test_fid_inception_layout_matches_the_published_parameter_names(one_thread):
    from torchvision.models.inception import Inception3

    model = FIDInceptionV3(input_size=75).eval()  # smallest valid size: same layers, 16x fewer FLOPs
    ours = model.state_dict()
    tv = Inception3(aux_logits=False, init_weights=False).state_dict()
    body = {k: v.shape for k, v in ours.items() if not k.startswith("fc.")}
    assert body == {k: v.shape for k, v in tv.items() if not k.startswith("fc.")}
    assert ours["fc.weight"].shape == (1008, 2048)  # pytorch-fid's TF graph has 1008 classes
    with torch.no_grad():
        feats = model(torch.rand(2, 3, 48, 48))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()


def test_missing_weights_give_clear_errors():
    with pytest.raises(RuntimeError, match="FID needs the Inception-v3"):
        load_fid_inception(offline=True)
    with pytest.raises(RuntimeError, match="LPIPS needs"):
        load_lpips_vgg(offline=True)


def test_lpips_network_and_weight_loading(tmp_path, one_thread):
    torch.manual_seed(0)
    net = LPIPSVGG().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    with torch.no_grad():
        for lin in net.lins:
            lin.weight.abs_()  # LPIPS's linear layers are non-negative
        assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-6)
        d = net(x, y)
    assert d.shape == (2,) and (d > 0).all()
    # files in the published layouts (torchvision VGG-16 keys, LPIPS lin{i}.model.1.weight keys)
    backbone = {f"features.{k}": v.half() for k, v in net.features.state_dict().items()}
    backbone["classifier.0.weight"] = torch.zeros(1)
    torch.save(backbone, tmp_path / "vgg.pth")
    torch.save({f"lin{i}.model.1.weight": torch.full((1, c, 1, 1), 0.5) for i, c in enumerate(LAYER_CHANNELS)},
               tmp_path / "lin.pth")
    loaded = load_lpips_vgg(tmp_path / "vgg.pth", tmp_path / "lin.pth")
    assert torch.equal(loaded.lins[2].weight, torch.full((1, 256, 1, 1), 0.5))
    assert torch.allclose(loaded.features[0].weight, net.features[0].weight.half().float())


@pytest.mark.slow
def test_eval_fid_and_kid_end_to_end_with_a_local_weight_file(tmp_path, one_thread):
    """The whole FID path of ``iqpfr eval`` with random Inception weights (the real ones cannot be fetched here)."""
    from iqpfr.cli import main
    from iqpfr.io import write_rgb

    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in FIDInceptionV3().state_dict().items()},
               weights)
    rng = np.random.default_rng(0)
    for i in range(6):
        write_rgb(tmp_path / "gt" / f"{i}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        write_rgb(tmp_path / "pred" / f"{i}.png", rng.integers(0, 128, (64, 64, 3), dtype=np.uint8))
    out = tmp_path / "r.csv"
    stats = tmp_path / "ref.npz"
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--metrics", "psnr,fid,kid",
                 "--fid-weights", str(weights), "--fid-save-ref", str(stats), "-o", str(out), "--no-plots"]) == 0
    import json

    first = json.loads(out.with_name("r.summary.json").read_text())["set_metrics"]
    assert first["fid"] > 0 and first["fid_n_pred"] == 6 and first["fid_n_ref"] == 6 and "kid" in first
    # the saved reference statistics give the same FID
    out2 = tmp_path / "r2.csv"
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--metrics", "fid", "--fid-ref", str(stats),
                 "--fid-weights", str(weights), "-o", str(out2), "--no-plots"]) == 0
    second = json.loads(out2.with_name("r2.summary.json").read_text())["set_metrics"]
    assert abs(second["fid"] - first["fid"]) < 1e-3 * max(1.0, first["fid"])
