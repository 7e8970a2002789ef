"""Self-describing checkpoints: save_model / load_model, official .pth loading, create_model(weights=)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from iqpfr import create_model, list_models, load_model, save_model
from iqpfr.weights.checkpoint import load_official_state_dict, model_config, read_model_config


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    return model


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("iqpfr-tiny", {"quality_mode": "continuous", "alpha": 0.5}),
        ("codeformer-tiny", {"default_w": 0.7}),
        ("codeformer-tiny+q", {}),
        ("gfpgan-tiny+q", {}),
    ],
)
def test_round_trip_is_exact(tmp_path, name, overrides):
    model = _randomise(create_model(name, **overrides)).eval()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config and loaded.preset == name
    assert _same_state(model, loaded)
    size = model.config.get("img_size", model.config.get("out_size"))
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        a = model(x, w=torch.tensor([0.2, 0.8]), quality=torch.tensor([0.3, 0.9])).image
        b = loaded(x, w=torch.tensor([0.2, 0.8]), quality=torch.tensor([0.3, 0.9])).image
    assert torch.equal(a, b)


def test_config_is_in_metadata_and_optional_json(tmp_path):
    model = create_model("iqpfr-tiny")
    path = save_model(model, tmp_path / "m.safetensors", config_json=True)
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["config"])
    assert meta == json.loads((tmp_path / "m.json").read_text()) == model_config(model)
    assert meta["class"] == "iqpfr.models.iqpfr:IQPFR" and meta["architecture"] == "iqpfr-tiny"
    assert meta["model_args"]["codebook_size"] == 64
    # a folder with model.safetensors loads too; overrides change non-parameter settings
    folder = tmp_path / "run"
    save_model(model, folder / "model.safetensors")
    assert load_model(folder, default_w=0.25).default_w == 0.25


def test_save_refuses_to_overwrite_when_asked(tmp_path):
    model = create_model("codeformer-tiny")
    path = save_model(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        save_model(_randomise(model), path, overwrite=False)
    assert path.read_bytes() == before
    with pytest.raises(ValueError):
        save_model(model, tmp_path / "m.pth")


def test_official_pth_with_params_ema_loads(tmp_path):
    source = _randomise(create_model("codeformer-tiny"))
    path = tmp_path / "official.pth"
    torch.save({"params_ema": source.state_dict(), "params": {}}, path)
    assert _same_state(source, load_model(path, arch="codeformer-tiny"))
    assert set(load_official_state_dict(path)) == set(source.state_dict())
    model = create_model("codeformer-tiny", weights=path)
    assert _same_state(source, model)


def test_plain_safetensors_without_config_uses_preset_from_arch(tmp_path):
    from safetensors.torch import save_file

    source = _randomise(create_model("iqpfr-tiny"))
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    assert read_model_config(path) == {}
    assert _same_state(source, load_model(path, arch="iqpfr-tiny"))
    # strict: a size mismatch is an error, not a silent partial load, and it fits on one line
    with pytest.raises(ValueError, match=r"bare.safetensors: the weights do not fit the architecture tried "
                       r"\(codeformer-tiny\): 1 tensors differ in shape") as info:
        load_model(path, arch="codeformer-tiny")
    assert "\n" not in str(info.value) and len(str(info.value)) < 500


def test_bad_files_give_clear_errors(tmp_path):
    corrupt = tmp_path / "broken.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        load_official_state_dict(corrupt)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_model(tmp_path / "missing.safetensors")
    # a config naming a class outside the preset table is refused (no arbitrary imports)
    from safetensors.torch import save_file

    path = tmp_path / "evil.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"config": json.dumps({"class": "os:system"})})
    with pytest.raises(ValueError, match="unknown model class"):
        load_model(path)


def test_list_and_create_models():
    names = list_models()
    for required in ("codeformer", "codeformer-tiny", "codeformer+q", "iqpfr-512", "iqpfr-256", "iqpfr-128",
                     "iqpfr-tiny", "gfpgan-v1.4+q"):
        assert required in names
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nope")
    model = create_model("codeformer-tiny", n_layers=1)
    assert len(model.ft_layers) == 1 and model.config["n_layers"] == 1


def test_models_factory_is_networks_only_and_public_create_model_loads_weights(tmp_path):
    """``iqpfr.models`` builds networks; the weight load of ``iqpfr.create_model`` lives in iqpfr.weights."""
    import inspect

    from iqpfr.models import factory

    assert "weights" not in inspect.signature(factory.create_model).parameters
    source = _randomise(create_model("codeformer-tiny"), seed=3)
    path = save_model(source, tmp_path / "m.safetensors")
    assert _same_state(create_model("codeformer-tiny", weights=path), source)
    assert not _same_state(factory.create_model("codeformer-tiny"), source)


def test_export_weights_fp16_loads_by_path_and_reports(tmp_path, capsys):
    from iqpfr.cli import main
    from iqpfr.weights.cache import sha256_file

    model = _randomise(create_model("iqpfr-tiny", quality_mode="continuous"), seed=1).eval()
    run = save_model(model, tmp_path / "model_ema.safetensors")
    out = tmp_path / "release.safetensors"
    assert main(["export", "weights", str(run), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sha256"] == sha256_file(out) and report["bytes"] == out.stat().st_size
    with safe_open(str(out), framework="pt") as fh:
        dtypes = {fh.get_tensor(k).dtype for k in fh.keys() if fh.get_tensor(k).is_floating_point()}
    assert dtypes == {torch.float16}
    assert out.stat().st_size < 0.6 * run.stat().st_size
    loaded = load_model(out)  # by path alone, same class, preset and settings
    assert loaded.preset == "iqpfr-tiny" and loaded.config == model.config
    for k, v in model.state_dict().items():
        want = v.half().to(v.dtype) if v.is_floating_point() else v
        assert torch.equal(loaded.state_dict()[k], want), k
    # the reported difference is the real one, and it is small but not zero for random weights
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                                        size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        diff = float((model(x, w=torch.full((1,), 0.5)).image - loaded(x, w=torch.full((1,), 0.5)).image).abs().max())
    assert report["max_abs_diff"] == pytest.approx(diff) and 0 < diff < 0.05
    # never replaced silently; one line naming the file
    assert main(["export", "weights", str(run), "-o", str(out)]) != 0
    assert "exists" in capsys.readouterr().err
