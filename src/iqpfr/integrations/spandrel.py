"""spandrel support: ``import iqpfr.integrations.spandrel`` registers iqpfr's networks.

spandrel (the model loader of ComfyUI, AUTOMATIC1111/Forge and chaiNNer) recognises an architecture
from a state dict's keys alone. An IQPFR checkpoint holds CodeFormer's keys plus its own, and a
quality-adapted CodeFormer/GFPGAN holds the original keys plus ``quality_adapter.*``, so spandrel's
own CodeFormer/GFPGAN detectors would claim them and then fail. The architectures registered here
are detected *before* spandrel's ``CodeFormer`` (``spandrel_extra_arches``) and ``GFPGAN``, and
claim a state dict only when it has a key those networks lack; plain official files still load as
CodeFormer/GFPGAN.

The network's constructor arguments come, in this order, from (1) the ``iqpfr_config`` tensor that
iqpfr writes into IQPFR / quality-adapted files (``iqpfr.weights.checkpoint.CONFIG_TENSOR_KEY``;
spandrel and ComfyUI drop safetensors metadata), (2) the file shipped in the package or held in the
weight cache whose tensors these are (for files written before (1) existed, e.g. the embedded
``iqpfr-128``), (3) the preset whose parameter shapes these are (n_head, AdaIN and other
shape-less arguments then take the preset's values: a ``guessed-config`` tag says so).

The descriptor (``purpose="FaceSR"``, scale 1) restores an aligned face: ``descriptor(image)`` with
image (1, 3, H, W) RGB in [0, 1] returns the same shape and range, computed as
``FaceRestorer.restore_aligned`` does at fidelity ``DEFAULT_FIDELITY`` and the model's default
quality target (a face of another size is resized to the network's side and back). For other
settings, ``restore_aligned(descriptor, image, fidelity=..., quality=...)``; ``descriptor.model`` is
the plain iqpfr network (``model(lq_in_minus1_1, w=..., quality=...)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqpfr.weights.checkpoint import (
    pop_config_tensor,
    read_model_config,
    rename_iqpir_keys,
)

DEFAULT_FIDELITY = 0.5  # CodeFormer's recommended w, and FaceRestorer.restore_aligned's default
ARCH_IDS = ("iqpfr.IQPFR", "iqpfr.CodeFormerQ", "iqpfr.GFPGANQ")
# spandrel's detectors that would otherwise claim our files (CodeFormer is in spandrel_extra_arches)
CLAIMED_BEFORE = ("CodeFormer", "GFPGAN")

_CODEFORMER_KEYS = ("position_emb", "quantize.embedding.weight", "ft_layers.0.self_attn.in_proj_weight",
                    "encoder.blocks.0.weight")
_GFPGAN_KEYS = ("toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight")
_IQPFR_CLASS = "iqpfr.models.iqpfr:IQPFR"
_CODEFORMER_CLASS = "iqpfr.models.codeformer:CodeFormer"
_GFPGAN_CLASS = "iqpfr.models.gfpgan:GFPGANv1Clean"


# ------------------------------------------------------------------------------------- detection


def _has_all(state: dict, keys: tuple[str, ...]) -> bool:
    return all(k in state for k in keys)


def is_iqpfr(state: dict) -> bool:
    """An IQPFR network (dual codebook), in iqpfr's or the IQPIR reference's key names."""
    state = rename_iqpir_keys(state) if "quantize_aesthetic.embedding.weight" in state else state
    return _has_all(state, _CODEFORMER_KEYS) and "quantize.embedding_hq.weight" in state


def is_codeformer_q(state: dict) -> bool:
    """CodeFormer with a quality adapter (and no HQ+ codebook)."""
    return _has_all(state, _CODEFORMER_KEYS) and "quality_adapter.weight" in state and not is_iqpfr(state)


def is_gfpgan_q(state: dict) -> bool:
    """GFPGAN v1.4 with a quality adapter."""
    return _has_all(state, _GFPGAN_KEYS) and "quality_adapter.weight" in state


# ---------------------------------------------------------------------------------- the config


def _known_files() -> tuple[Path, ...]:
    """Restoration weight files whose tensors may reappear without their metadata: those shipped in
    the package and those in the weight cache."""
    files = sorted((Path(__file__).resolve().parents[1] / "weights").glob("*.safetensors"))
    try:
        from iqpfr.weights.cache import weights_dir

        files += sorted(Path(weights_dir()).glob("**/*.safetensors"))
    except Exception:  # no cache yet, or an unreadable one: the shipped files are enough
        pass
    return tuple(files)


def _matching_file_config(state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """The config of a known file holding exactly these tensors (same keys, shapes and values of
    a fingerprint tensor), else None."""
    from safetensors import safe_open

    probe = "position_emb" if "position_emb" in state else "quality_adapter.weight"
    if probe not in state:
        return None
    for path in _known_files():
        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = set(fh.keys()) - {"iqpfr_config"}
                if keys != set(state) or probe not in keys:
                    continue
                theirs = fh.get_tensor(probe)
            if theirs.shape == state[probe].shape and torch.equal(theirs.float(), state[probe].float()):
                config = read_model_config(path)
                if config.get("class"):
                    return config
        except Exception:  # an unreadable cache file is simply not a match
            continue
    return None


def _matching_preset(state: dict[str, torch.Tensor], cls: str, with_adapter: bool) -> str | None:
    """The first preset of class ``cls`` whose parameter names and shapes equal ``state``'s."""
    from iqpfr.models.factory import PRESETS, create_model

    wanted = {k: tuple(v.shape) for k, v in state.items()}
    for name, spec in PRESETS.items():
        if spec.cls != cls or (spec.quality_adapter is not None) != with_adapter:
            continue
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = create_model(name)
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == wanted:
            return name
    return None


def build_network(state: dict[str, torch.Tensor], cls: str, with_adapter: bool) -> tuple[nn.Module, list[str]]:
    """The iqpfr network for ``state`` (not yet loaded) and descriptor tags."""
    from iqpfr.models.factory import build_model, create_model

    state, config = pop_config_tensor(state)
    tags: list[str] = []
    if config is None:
        config = _matching_file_config(state)
    if config is not None and config.get("class"):
        model = build_model(config["class"], dict(config.get("model_args", {})), config.get("quality_adapter"))
        if config.get("architecture"):
            model.preset = config["architecture"]
            tags.append(str(config["architecture"]))
    else:
        preset = _matching_preset(state, cls, with_adapter)
        if preset is None:
            from spandrel import UnsupportedModelError

            raise UnsupportedModelError(
                "an iqpfr checkpoint without its config (no iqpfr_config tensor, not a known file, no preset "
                "of these shapes): load it with iqpfr.load_model(path) and save it again with iqpfr.save_model"
            )
        model = create_model(preset)
        model.preset = preset
        tags += [preset, "guessed-config"]
    return model, tags


# --------------------------------------------------------------------------------- the call


def restore_aligned(
    descriptor_or_model: Any, image: torch.Tensor, *, fidelity: float | torch.Tensor = DEFAULT_FIDELITY,
    quality: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Restore aligned faces (B, 3, H, W) RGB in [0, 1] -> same shape, in [0, 1].

    The face is resized to the network's side S when H, W differ from it (area-antialiased down,
    bicubic up) and the result back to (H, W); at S x S this is ``FaceRestorer.restore_aligned``.
    fidelity: w in [0, 1] (float or (B,)); quality: target in [0, 1] or None (the model's default).
    """
    model = getattr(descriptor_or_model, "model", descriptor_or_model)
    size = _network_size(model)
    height, width = image.shape[-2:]
    x = image.float()
    if (height, width) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    param = next(model.parameters())
    lq = x.to(param.device, param.dtype) * 2.0 - 1.0
    w = torch.as_tensor(fidelity, dtype=param.dtype, device=param.device).expand(lq.shape[0])
    q = None if quality is None else torch.as_tensor(quality, dtype=param.dtype, device=param.device).expand(lq.shape[0])
    out = model(lq, w=w, quality=q)
    restored = ((getattr(out, "image", out).float().clamp(-1.0, 1.0) + 1.0) / 2.0)
    if (height, width) != (size, size):
        restored = F.interpolate(restored, size=(height, width), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return restored.to(image.device, image.dtype)


def _network_size(model: nn.Module) -> int:
    config = getattr(model, "config", None) or {}
    for key in ("img_size", "out_size"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return 512


def _call(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    return restore_aligned(model, image)


# ----------------------------------------------------------------------------- registration


def _architectures() -> list:
    """spandrel ``Architecture`` objects for iqpfr's networks (spandrel imported here)."""
    from spandrel import Architecture, ImageModelDescriptor, SizeRequirements

    class _IqpfrArchitecture(Architecture[nn.Module]):
        def __init__(self, arch_id: str, name: str, cls: str, with_adapter: bool, detect) -> None:
            super().__init__(id=arch_id, name=name, detect=detect)
            self._cls = cls
            self._with_adapter = with_adapter

        def load(self, state_dict):
            state = rename_iqpir_keys(state_dict) if "quantize_aesthetic.embedding.weight" in state_dict else state_dict
            model, tags = build_network(state, self._cls, self._with_adapter)
            weights = pop_config_tensor(state)[0]
            size = _network_size(model)
            return ImageModelDescriptor(
                model,
                weights,
                architecture=self,
                purpose="FaceSR",
                tags=[*tags, f"{size}px"],
                supports_half=False,  # the attention and AdaIN statistics are not checked in fp16
                supports_bfloat16=True,
                scale=1,
                input_channels=3,
                output_channels=3,
                size_requirements=SizeRequirements(minimum=size, square=True),
                call_fn=_call,
            )

    return [
        _IqpfrArchitecture("iqpfr.IQPFR", "IQPFR", _IQPFR_CLASS, False, is_iqpfr),
        _IqpfrArchitecture("iqpfr.CodeFormerQ", "CodeFormer+Q (iqpfr)", _CODEFORMER_CLASS, True, is_codeformer_q),
        _IqpfrArchitecture("iqpfr.GFPGANQ", "GFPGAN+Q (iqpfr)", _GFPGAN_CLASS, True, is_gfpgan_q),
    ]


def register(registry: Any = None) -> list:
    """Add iqpfr's architectures to ``registry`` (default: spandrel's ``MAIN_REGISTRY``), detected
    before spandrel's CodeFormer and GFPGAN; idempotent. Returns the architectures added."""
    from spandrel import MAIN_REGISTRY, ArchSupport

    registry = MAIN_REGISTRY if registry is None else registry
    supports = [ArchSupport.from_architecture(arch, before=CLAIMED_BEFORE) for arch in _architectures()]
    return registry.add(*supports, ignore_duplicates=True)


register()
