"""Underwater task: UIQM / UCIQE against direct NumPy transcriptions, the enhancer's shapes, tiling,
checkpoint, CLI and the CIEDE2000 used by its evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import shared_path
from iqpfr.quality import create_scorer, list_scorers


def _image(h: int = 34, w: int = 47, seed: int = 0) -> np.ndarray:
    """A fixed smooth-plus-noise test image, uint8 (H, W, 3), with a few exactly flat blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([40 + 2 * xx, 90 + 3 * yy, 160 - xx - yy], -1).astype(np.float64)
    img = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255)
    img[:10, :10] = (30, 120, 140)  # flat block: EME and logAMEE must skip it
    return np.round(img).astype(np.uint8)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float64) / 255.0).permute(2, 0, 1)[None]


# ---- NumPy transcriptions of the published formulas (loops, no torch) --------------------------------

def _np_trimmed_mean(x, al=0.1, ar=0.1):
    x = np.sort(x.ravel())
    k = len(x)
    lo, hi = math.ceil(al * k), math.floor(ar * k)
    return x[lo:k - hi].sum() / (k - lo - hi)


def _np_uicm(rgb):
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, (r + g) / 2 - b
    mrg, myb = _np_trimmed_mean(rg), _np_trimmed_mean(yb)
    vrg, vyb = np.mean((rg - mrg) ** 2), np.mean((yb - myb) ** 2)
    return -0.0268 * math.sqrt(mrg**2 + myb**2) + 0.1586 * math.sqrt(vrg + vyb)


def _np_sobel(x):
    from scipy import ndimage

    mag = np.hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1))
    return mag * (255.0 / mag.max())


def _np_eme(x, win=10):
    k1, k2 = x.shape[1] // win, x.shape[0] // win
    total = 0.0
    for i in range(k2):
        for j in range(k1):
            block = x[i * win:(i + 1) * win, j * win:(j + 1) * win]
            mx, mn = block.max(), block.min()
            if mx > 0 and mn > 0:
                total += math.log(mx / mn)
    return 2.0 / (k1 * k2) * total


def _np_uism(rgb):
    return sum(w * _np_eme(_np_sobel(rgb[..., c]) * rgb[..., c]) for c, w in enumerate((0.299, 0.587, 0.114)))


def _np_uiconm(rgb, win=10):
    k1, k2 = rgb.shape[1] // win, rgb.shape[0] // win
    total = 0.0
    for i in range(k2):
        for j in range(k1):
            block = rgb[i * win:(i + 1) * win, j * win:(j + 1) * win, :]
            top, bot = block.max() - block.min(), block.max() + block.min()
            if top > 0 and bot > 0:
                total += (top / bot) * math.log(top / bot)
    return -total / (k1 * k2)


def _np_lab(rgb01):
    """sRGB [0, 1] -> CIELab D65 (independent of iqpfr.quality.colour)."""
    lin = np.where(rgb01 > 0.04045, ((rgb01 + 0.055) / 1.055) ** 2.4, rgb01 / 12.92)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _np_uciqe(rgb8):
    lab = _np_lab(rgb8 / 255.0) / 100.0
    lum = lab[..., 0].ravel()
    chroma = np.hypot(lab[..., 1], lab[..., 2]).ravel()
    sigma_c = chroma.std()
    con_l = np.percentile(lum, 99) - np.percentile(lum, 1)
    denom = np.sqrt(chroma**2 + lum**2)
    mu_s = np.mean(np.divide(chroma, denom, out=np.zeros_like(chroma), where=denom > 0))  # black: 0
    return 0.4680 * sigma_c + 0.2745 * con_l + 0.2576 * mu_s


def test_scorers_registered():
    assert {"uiqm", "uciqe"} <= set(list_scorers())
    assert create_scorer("uiqm").higher_better and create_scorer("uciqe").differentiable


def test_uiqm_matches_numpy_transcription():
    from iqpfr.quality.uiqm import uiqm_components

    img = _image()
    rgb = img.astype(np.float64)
    parts = {k: float(v) for k, v in uiqm_components(_tensor(img)).items()}
    expected = {"uicm": _np_uicm(rgb), "uism": _np_uism(rgb), "uiconm": _np_uiconm(rgb)}
    for key, value in expected.items():
        assert parts[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert parts["uiqm"] == pytest.approx(0.0282 * expected["uicm"] + 0.2953 * expected["uism"]
                                          + 3.5753 * expected["uiconm"], rel=1e-6)
    # batched: the same values image by image, float32 close to float64
    batch = torch.cat([_tensor(img), _tensor(_image(seed=1))]).float()
    scores = create_scorer("uiqm").score(batch)
    assert scores.shape == (2,) and float(scores[0]) == pytest.approx(parts["uiqm"], rel=1e-4)


def test_uciqe_matches_numpy_transcription():
    img = _image()
    value = float(create_scorer("uciqe")(_tensor(img)))
    assert value == pytest.approx(_np_uciqe(img.astype(np.float64)), rel=1e-6)
    # a gray image: no chroma, no saturation, only the luminance term
    gray = np.tile(np.linspace(0, 255, 50).round().astype(np.uint8)[None, :, None], (20, 1, 3))
    assert float(create_scorer("uciqe")(_tensor(gray))) == pytest.approx(_np_uciqe(gray.astype(np.float64)), abs=1e-5)


def test_scores_move_the_expected_way_and_are_differentiable():
    img = _tensor(_image()).float()
    flat = img.mean(dim=(2, 3), keepdim=True).expand_as(img) * 0.5 + img * 0.5  # less contrast and colour
    for name in ("uiqm", "uciqe"):
        scorer = create_scorer(name)
        if name == "uciqe":  # UIQM's logAMEE peaks at a block contrast of 1/e, so it need not fall here
            assert float(scorer(img)) > float(scorer(flat)), name
        x = img.clone().requires_grad_(True)
        scorer(x).sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name


def test_ciede2000_sharma_reference_pairs():
    from iqpfr.tasks.underwater.evaluate import delta_e_2000

    # Sharma, Wu, Dalal (2005), Table 1: pairs 1, 7, 17, 25 and their published Delta E00
    lab1 = np.array([[50, 2.6772, -79.7751], [50, 0, 0], [50, 2.5, 0], [60.2574, -34.0099, 36.2677]]).T
    lab2 = np.array([[50, 0, -82.7485], [50, -1, 2], [73, 25, -18], [60.4626, -34.1751, 39.4387]]).T
    np.testing.assert_allclose(delta_e_2000(lab1, lab2), [2.0425, 2.3669, 27.1492, 1.2644], atol=1e-4)


def test_quality_levels_are_monotone():
    from iqpfr.tasks.underwater.targets import adjust_quality

    img = _tensor(_image(60, 80)).float()
    assert torch.equal(adjust_quality(img, 0.0), img)
    uciqe = create_scorer("uciqe")
    values = [float(uciqe(adjust_quality(img, s))) for s in (-1.0, -0.5, 0.5, 1.0)]
    assert values == sorted(values)


def test_calibration_levels_raise_uiqm_and_uciqe_on_references():
    """On LSUI training references (at the calibration's half size) the levels raise UCIQE on every
    image, UICM and UISM on their mean and UIQM's mean in rank; UIConM is not asserted (it falls as
    contrast rises, the reason the model card gives); the calibration built from them increases."""
    import torch.nn.functional as F

    from iqpfr.quality.uiqm import uiqm_components
    from iqpfr.tasks.underwater.targets import LEVELS, adjust_quality, calibrate
    from iqpfr.tasks.underwater.train import load_pair, pair_numbers, to_tensor

    root = shared_path("data", "lsui_test108")
    refs = [F.interpolate(to_tensor(load_pair(root, n)[1]), scale_factor=0.5, mode="area")
            for n in pair_numbers(root, heldout=False)[:4]]
    uciqe = create_scorer("uciqe")
    parts = {k: [] for k in ("uicm", "uism", "uiqm")}
    with torch.no_grad():
        for ref in refs:
            levels = torch.cat([torch.round(adjust_quality(ref, s) * 255.0) / 255.0 for s in LEVELS])
            assert np.all(np.diff(uciqe(levels).numpy()) > 0)
            values = uiqm_components(levels)
            for k in parts:
                parts[k].append(values[k].numpy())
    for k in ("uicm", "uism"):
        assert np.all(np.diff(np.mean(parts[k], axis=0)) > 0), k
    # UIQM of the mean: rank correlation with s, and the ends. Not strict: the untouched reference
    # (s = 0) can score a little below s = -0.25, because small blur, desaturation or contrast
    # losses each raise UIQM slightly (MODEL_CARD.md, "Underwater")
    from scipy.stats import spearmanr

    uiqm = np.mean(parts["uiqm"], axis=0)
    assert spearmanr(LEVELS, uiqm)[0] >= 0.9 and uiqm[-1] > uiqm[4] > uiqm[0]
    calibration = calibrate(refs[:2], levels=(-1.0, 0.0, 1.0))
    assert calibration.q == sorted(calibration.q) and calibration.default_q == calibration.q[1]


def _model(seed: int = 0, tone: bool = True):
    from iqpfr.tasks.underwater.model import UnderwaterEnhanceNet

    torch.manual_seed(seed)
    model = UnderwaterEnhanceNet(width=8, emb_dim=8, codebook_size=16, thumb=32, global_dim=16, tone=tone)
    with torch.no_grad():  # random, non-zero output and skip layers (a fresh net starts at identity)
        for layer in (model.dec_out, model.fuse0, model.fuse1, model.colour_out, model.film_out, model.tone_out):
            if layer is not None:
                layer.weight.normal_(0, 0.05)
    return model.eval()


def test_tone_head_is_the_target_operator(tmp_path):
    from iqpfr.tasks.underwater.model import UnderwaterEnhanceNet, apply_tone, logit_means
    from iqpfr.tasks.underwater.targets import adjust_quality
    from iqpfr.tasks.underwater.train import _init_from
    from iqpfr.weights.checkpoint import save_model

    x = torch.rand(2, 3, 20, 24) * 1.2 - 0.1  # unclamped, as the decoder's output
    assert torch.equal(apply_tone(x, torch.zeros(2, 3), logit_means(x)), x)
    img = _tensor(_image(40, 48)).float()
    pivots = logit_means(img)
    # gains 0.8 s, 0.35 s, 0.5 s: the training targets' own operator (the pivots, taken before the
    # detail step here and after it there, differ by far less than an 8-bit level)
    for s in (-0.6, 0.7):
        tone = torch.tensor([[0.8 * s, 0.35 * s, 0.5 * s]])
        torch.testing.assert_close(apply_tone(img, tone, pivots), adjust_quality(img, s), atol=1e-4, rtol=0)
    # each axis moves what it should; saturation keeps the mean colour offset (the cast)
    blur = torch.nn.functional.avg_pool2d(img, 5, 1, 2, count_include_pad=False)
    sharp = apply_tone(img, torch.tensor([[0.8, 0.0, 0.0]]), pivots)
    assert float((sharp - blur).abs().mean()) > 1.3 * float((img - blur).abs().mean())
    from iqpfr.quality.uciqe import uciqe_components

    base = uciqe_components(img)
    assert float(uciqe_components(apply_tone(img, torch.tensor([[0.0, 0.5, 0.0]]), pivots))["con_l"]) > float(base["con_l"])
    saturated = apply_tone(img, torch.tensor([[0.0, 0.0, 0.5]]), pivots)
    assert float(uciqe_components(saturated)["sigma_c"]) > float(base["sigma_c"])
    torch.testing.assert_close(logit_means(saturated)[:, 1:], pivots[:, 1:], atol=2e-3, rtol=0)

    # a model file without the head fine-tunes into one with it: same output at the default q while
    # the head is zero (with the head the colour map is always the default q's)
    old = _model(tone=False)
    path = save_model(old, tmp_path / "old.safetensors")
    new = UnderwaterEnhanceNet(**{**old.config, "tone": True})
    logs = []
    _init_from(new, str(path), logs.append)
    assert "tone_out.weight" in logs[0] and torch.count_nonzero(new.tone_out.weight) == 0
    frame = torch.rand(1, 3, 32, 36)
    q0 = old.default_quality
    assert torch.allclose(new.eval()(frame, q0), old(frame, q0), atol=1e-6)
    with torch.no_grad():
        new.tone_out.bias.copy_(torch.tensor([0.5, 0.3, 0.2]))
    assert not torch.allclose(new(frame, q0), old(frame, q0))
    assert torch.equal(new.global_code(frame, 0.2)["colour"], new.global_code(frame, 0.9)["colour"])
    # a file that does not fit (another width) is refused, naming it
    other = save_model(UnderwaterEnhanceNet(width=4, emb_dim=8, codebook_size=16, thumb=32, global_dim=16),
                       path.with_name("other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors"):
        _init_from(UnderwaterEnhanceNet(**{**old.config, "tone": True}), str(other), logs.append)


def test_model_shapes_quality_and_tiling_without_seams():
    from iqpfr.tasks.underwater.model import enhance_image
    from iqpfr.upsample.tiles import seam_report, tile_boundaries

    model = _model()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        out = model(x, quality=torch.tensor([0.2, 0.9]))
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert not torch.allclose(model(x, 0.1), model(x, 0.9))  # the condition reaches the output

    image = torch.rand(1, 3, 90, 130)
    image = torch.nn.functional.avg_pool2d(image, 3, 1, 1)  # some structure
    whole = enhance_image(model, image, 0.5, tile=0)
    tiled = enhance_image(model, image, 0.5, tile=48, overlap=24)
    assert tiled.shape == image.shape
    # the blend of overlapping windows ~ the whole image (the outer 4 pixels differ by padding only)
    diff = (tiled - whole).abs()
    assert float(diff[..., 4:-4, 4:-4].max()) < 0.02 and float(diff.mean()) < 2e-3
    out = tiled[0].permute(1, 2, 0).numpy()
    report = seam_report(out, tile_boundaries(130, 48), tile_boundaries(90, 48))
    assert report["boundaries"] > 0 and report["boundary_max"] <= report["interior_max"]


def test_checkpoint_loads_by_path_alone(tmp_path):
    from iqpfr.tasks.underwater import UnderwaterEnhancer
    from iqpfr.tasks.underwater.model import UnderwaterEnhanceNet
    from iqpfr.weights.checkpoint import load_model, save_model

    model = _model()
    model.default_quality = model.config["default_quality"] = 0.61
    path = save_model(model, tmp_path / "uw.safetensors", extra_config={"task": "underwater"})
    loaded = load_model(path)
    assert isinstance(loaded, UnderwaterEnhanceNet) and loaded.default_quality == pytest.approx(0.61)
    x = torch.rand(1, 3, 24, 28)
    assert torch.equal(loaded(x, 0.3), model(x, 0.3))
    enhancer = UnderwaterEnhancer.from_pretrained(path, tile=0)
    rgb = (np.random.default_rng(0).random((21, 30, 3)) * 255).astype(np.uint8)
    out = enhancer.enhance(rgb, quality=0.7)
    assert out.shape == rgb.shape and out.dtype == np.uint8  # sizes that are no multiple of 4 are padded
    with pytest.raises(ValueError, match="quality"):
        enhancer.enhance(rgb, quality=1.5)


def test_enhance_cli_outputs_report_and_bad_inputs(tmp_path, capsys):
    from PIL import Image

    from iqpfr.cli import main
    from iqpfr.weights.checkpoint import save_model

    weights = save_model(_model(), tmp_path / "uw.safetensors")
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_image(30, 41)).save(src / "a.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    code = main(["enhance", str(src), "--task", "underwater", "-o", str(out), "--weights", str(weights),
                 "--quality-target", "0.4,0.8", "--json", str(report), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert (out / "final_results" / "a_q0.4.png").is_file() and (out / "final_results" / "a_q0.8.png").is_file()
    errors = [line for line in err.splitlines() if "error" in line]
    assert any("broken.jpg" in line for line in errors) and any("empty.png" in line for line in errors)
    data = json.loads(report.read_text())
    statuses = sorted(i["status"] for i in data["images"])
    assert statuses.count("ok") == 2 and statuses.count("failed") == 4  # 2 bad files x 2 targets
    assert sum("broken.jpg" in line for line in errors) == 1
    first = (out / "final_results" / "a_q0.4.png").read_bytes()
    # a second run skips existing outputs and never rewrites them
    assert main(["enhance", str(src / "a.png"), "-o", str(out), "--weights", str(weights),
                 "--quality-target", "0.4,0.8", "-q"]) == 0
    assert "2 skipped" in capsys.readouterr().err
    assert (out / "final_results" / "a_q0.4.png").read_bytes() == first
    # bad arguments: one line, exit code 2
    assert main(["enhance", str(src / "a.png"), "-o", str(out), "--quality-target", "2"]) == 2
    assert main(["enhance", str(tmp_path / "missing.png"), "-o", str(out), "--weights", str(weights)]) == 1
    assert main(["enhance", str(src / "a.png"), "-o", str(out), "--weights", str(tmp_path / "nope.safetensors"),
                 "--overwrite"]) == 2
    assert "nope.safetensors" in capsys.readouterr().err


def test_shipped_weights_load():
    from iqpfr.tasks.underwater.enhancer import UnderwaterEnhancer, default_weights

    if not default_weights().is_file():
        pytest.skip(f"{default_weights()} not built yet")
    assert default_weights().stat().st_size < 5 * 2**20
    enhancer = UnderwaterEnhancer.from_pretrained()
    assert 0 < enhancer.default_quality < 1 and enhancer.info["calibration"]
    rgb = _image(40, 52)
    assert enhancer.enhance(rgb).shape == rgb.shape
