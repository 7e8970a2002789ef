"""Self-describing checkpoints: ``save_model`` / ``load_model`` and official ``.pth`` loading.

Every file and weight-zoo read or write of a model goes through here (``iqpfr.models`` only builds
networks). ``create_model(name, weights=...)`` is the preset factory plus a strict weight load.

A saved ``.safetensors`` file carries its model config as JSON in the metadata entry ``config``
(the same entry ``iqpfr weights convert`` writes)::

    {"format": "iqpfr-safetensors-v1", "architecture": "iqpfr-256",          # preset name, if any
     "class": "iqpfr.models.iqpfr:IQPFR", "model_args": {...all constructor kwargs...},
     "quality_adapter": null | {"num_buckets": 10, "mode": "bucket"}}

so ``load_model(path)`` rebuilds the right class and size from the file alone. Files that only
name an ``architecture`` (converted official checkpoints) are built from that preset plus
``model_args``. Weights are read only with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqpfr.models import factory
from iqpfr.models.adapters import adapter_config
from iqpfr.models.factory import PRESETS, build_model, class_path

FORMAT = "iqpfr-safetensors-v1"
METADATA_KEY = "config"
# The same config as UTF-8 JSON bytes in a uint8 tensor of the state dict itself, for loaders that
# see only tensors (spandrel, ComfyUI's load_torch_file drop safetensors metadata). Written for the
# networks whose arguments cannot be read off their shapes (IQPFR, quality-adapted models);
# ``load_state_dict_file`` removes it again.
CONFIG_TENSOR_KEY = "iqpfr_config"
_STATE_KEYS = ("params_ema", "params", "state_dict")  # official containers, EMA weights first
_OFFICIAL_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin"}

# IQPIR / IQPFR reference checkpoints (fengyang1399-pixel/IQPIR) -> our names. The dual head's
# interleaved layout (channel 2k + j, j = 0 HQ+) is the same, so idx_pred_layer needs no change.
IQPIR_KEY_RENAMES = {
    "quantize_aesthetic.embedding.weight": "quantize.embedding_hq.weight",
    "score_embed.weight": "quality_embed.weight",
}


def model_config(model: nn.Module) -> dict[str, Any]:
    """The JSON-able record that rebuilds ``model`` (class, full constructor kwargs, adapter)."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(model).__name__} has no `config` dict of constructor kwargs; cannot save it")
    return {
        "format": FORMAT,
        "architecture": getattr(model, "preset", None),
        "class": class_path(model),
        "model_args": {k: v for k, v in config.items() if k != "arch"},
        "quality_adapter": adapter_config(model),
    }


def config_tensor(config: dict[str, Any]) -> torch.Tensor:
    """``config`` as a 1-D uint8 tensor of its JSON bytes (see ``CONFIG_TENSOR_KEY``)."""
    data = json.dumps(config, sort_keys=True).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def wants_config_tensor(config: dict[str, Any]) -> bool:
    """Whether a file of this model should carry ``CONFIG_TENSOR_KEY``: IQPFR networks and
    quality-adapted ones (plain CodeFormer/GFPGAN files stay byte-compatible with their loaders)."""
    return config.get("class") == "iqpfr.models.iqpfr:IQPFR" or config.get("quality_adapter") is not None


def pop_config_tensor(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``(state without CONFIG_TENSOR_KEY, the config it held or None)``."""
    if CONFIG_TENSOR_KEY not in state:
        return state, None
    state = dict(state)
    raw = state.pop(CONFIG_TENSOR_KEY)
    try:
        config = json.loads(bytes(raw.to(torch.uint8).flatten().tolist()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        config = None
    return state, config if isinstance(config, dict) else None


def save_model(
    model: nn.Module, path: str | os.PathLike, *, config_json: bool = False, overwrite: bool = True,
    extra_config: dict[str, Any] | None = None, dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model``'s state dict as safetensors with its config in the metadata; atomic.

    ``config_json=True`` also writes the config to ``<path stem>.json`` beside it; ``extra_config``
    adds JSON-able entries (e.g. where the weights came from) to the recorded config; ``dtype``
    (e.g. ``torch.float16``) stores the floating-point tensors in that type (``load_model`` builds
    the network in fp32 and casts them back). Returns ``path``.
    """
    from safetensors.torch import save_file

    from iqpfr.utils.fs import atomic_write_text, atomic_write_with

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: save_model writes .safetensors files")
    config = {**model_config(model), **(extra_config or {})}
    # safetensors refuses tensors that share memory and wants contiguous CPU tensors
    tensors = {k: v.detach().to("cpu", dtype if dtype is not None and v.is_floating_point() else v.dtype)
               .contiguous().clone() for k, v in model.state_dict().items()}
    if wants_config_tensor(config):
        tensors[CONFIG_TENSOR_KEY] = config_tensor(model_config(model))
    metadata = {METADATA_KEY: json.dumps(config, sort_keys=True), "format": "pt"}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), overwrite=overwrite)
    if config_json:
        atomic_write_text(path.with_suffix(".json"), json.dumps(config, indent=2, sort_keys=True) + "\n", overwrite=overwrite)
    return path


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """Config of a ``.safetensors`` file: its metadata, else a sibling ``<stem>.json`` /
    ``config.json``; {} when there is none."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if METADATA_KEY in meta:
        return json.loads(meta[METADATA_KEY])
    for sibling in (path.with_suffix(".json"), path.parent / "config.json"):
        if sibling.is_file():
            return json.loads(sibling.read_text())
    return {}


def rename_iqpir_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map IQPIR reference key names to ours (other keys unchanged)."""
    return {IQPIR_KEY_RENAMES.get(k, k): v for k, v in state.items()}


def load_official_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict of an official ``.pth`` (CodeFormer, GFPGAN, IQPIR) via ``torch.load(weights_only=True)``.

    Takes ``params_ema`` (else ``params`` / ``state_dict`` / the dict itself) and renames IQPIR keys.
    Raises ValueError naming the file when it is unreadable or holds no tensors.
    """
    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or a pickle that would need arbitrary code
        raise ValueError(f"{path}: not a readable weights-only torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    key = next((k for k in _STATE_KEYS if isinstance(obj.get(k), dict)), None)
    state = obj[key] if key else obj
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: no state dict of tensors found (top-level keys: {list(obj)[:8]})")
    return rename_iqpir_keys(state)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or an official ``.pth`` checkpoint (CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
        return pop_config_tensor(state)[0]
    return pop_config_tensor(load_official_state_dict(path))[0]


def infer_architecture(state: dict[str, torch.Tensor]) -> str:
    """Preset name for an official state dict without a config, from its keys and shapes."""
    if any(k.startswith("stylegan_decoder.") for k in state):
        return "gfpgan-v1.4"
    if "quantize.embedding_hq.weight" in state:
        return "iqpfr-512"
    if "position_emb" in state:
        return "codeformer+q" if "quality_adapter.weight" in state else "codeformer"
    raise ValueError("cannot tell the architecture from the state-dict keys; pass arch=")


def resolve_weight_file(path_or_name: str | os.PathLike) -> Path:
    """A weight file for a file path, a folder holding ``model.safetensors`` or a weight-zoo name."""
    path = Path(path_or_name).expanduser()
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    if path.is_file():
        return path
    from iqpfr.weights.cache import resolve_weights

    return Path(resolve_weights(os.fspath(path_or_name)))


def create_model(name: str, *, weights: str | os.PathLike | None = None, **overrides: Any) -> nn.Module:
    """Build the preset ``name`` (see ``iqpfr.list_models()``) with constructor kwargs overridden.

    ``weights``: an optional ``.safetensors`` / official ``.pth`` file, model folder or weight-zoo
    name whose state dict is loaded with ``strict=True``. Without it the model is randomly
    initialised (``iqpfr.models.factory.create_model``). Returns the model in train mode on CPU,
    like any freshly built ``nn.Module``.
    """
    model = factory.create_model(name, **overrides)
    if weights is not None:
        model.load_state_dict(load_state_dict_file(resolve_weight_file(weights)), strict=True)
    return model


def load_model(
    path_or_name: str | os.PathLike, *, arch: str | None = None, device: str | torch.device = "cpu", **overrides: Any
) -> nn.Module:
    """Rebuild a model from a checkpoint file, a model folder or a weight-zoo name; eval mode.

    ``.safetensors`` files saved by ``save_model`` (or ``iqpfr weights convert``) need nothing
    else; official ``.pth`` files are recognised from their keys (or pass ``arch``, a preset name).
    ``overrides`` change constructor kwargs that do not affect parameters (e.g. ``default_w``,
    ``quality_mode``). The state dict always loads with ``strict=True``.
    """
    path = resolve_weight_file(path_or_name)
    state = load_state_dict_file(path)
    config = read_model_config(path) if path.suffix == ".safetensors" else {}
    if arch is not None:
        model = create_model(arch, **{**config.get("model_args", {}), **overrides})
    elif config.get("class"):
        kwargs = {**config.get("model_args", {}), **overrides}
        model = build_model(config["class"], kwargs, config.get("quality_adapter"))
        if config.get("architecture") in PRESETS:
            model.preset = config["architecture"]
    elif config.get("architecture") in PRESETS:
        model = create_model(config["architecture"], **{**config.get("model_args", {}), **overrides})
    else:
        model = create_model(infer_architecture(state), **overrides)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ValueError(f"{path}: {state_mismatch(model, state)}") from None
    return model.to(device).eval()


def state_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """One line saying how ``state`` differs from ``model``'s parameters (for load errors)."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    built = getattr(model, "preset", None) or type(model).__name__
    missing, unexpected = sorted(own.keys() - theirs.keys()), sorted(theirs.keys() - own.keys())
    shapes = [k for k in own.keys() & theirs.keys() if own[k] != theirs[k]]
    parts = []
    if shapes:
        k = sorted(shapes)[0]
        parts.append(f"{len(shapes)} tensors differ in shape (e.g. {k}: file {theirs[k]}, {built} {own[k]})")
    if missing:
        parts.append(f"{len(missing)} tensors of {built} are missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors are not in {built} (e.g. {unexpected[0]})")
    return (f"the weights do not fit the architecture tried ({built}): " + "; ".join(parts)
            + " (name the right one with --model / arch=)")
