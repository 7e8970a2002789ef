"""Named model presets: ``create_model(name, **overrides)`` and ``list_models()``.

``PRESETS`` is the one explicit table of every buildable name. Each entry names its class as a
``"module:Class"`` string, imported only when that preset is built, so a missing optional module
never breaks the others. To add a preset, add one line to ``PRESETS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """One preset: the class (``"module:Class"``), its default constructor kwargs and, for
    plug-and-play models, the quality adapter attached after construction."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    quality_adapter: dict[str, Any] | None = None
    description: str = ""


# Sizes of the official CodeFormer release (CF inference_codeformer.py, VQGAN hard-coded inside).
_CODEFORMER_512 = dict(
    img_size=512, nf=64, ch_mult=(1, 2, 2, 4, 4, 8), res_blocks=2, attn_resolutions=(16,),
    codebook_size=1024, emb_dim=256, dim_embd=512, n_head=8, n_layers=9, dim_mlp=1024,
    connect_list=(32, 64, 128, 256),
)
# 64 px, 16x16 latent, tiny transformer: a forward pass takes milliseconds on CPU (tests).
_TINY = dict(
    img_size=64, nf=32, ch_mult=(1, 1, 2), res_blocks=1, attn_resolutions=(16,),
    codebook_size=64, emb_dim=32, dim_embd=64, n_head=4, n_layers=2, dim_mlp=128,
    connect_list=(32, 64),
)
# 256 px, 16x16 latent (the paper's token grid and 1024x256 codebooks), one ResBlock per level,
# narrow high-resolution levels and a 5x384 Transformer (MLP 512), sized so that the fp16
# weight file stays under the 40 MB package budget (19.5 M parameters, 39.0 MB).
# Like CodeFormer-512 (fusion up to 256 px) it fuses up to half resolution.
_IQPFR_256 = dict(
    img_size=256, nf=32, ch_mult=(1, 1, 2, 4, 8), res_blocks=1, attn_resolutions=(16,),
    codebook_size=1024, emb_dim=256, dim_embd=384, n_head=6, n_layers=5, dim_mlp=512,
    connect_list=(32, 64, 128),
)
# 128 px, 16x16 latent, 512x128 codebooks, 4x256 Transformer: ~6 GFLOP per face, CPU-trainable.
_IQPFR_128 = dict(
    img_size=128, nf=32, ch_mult=(1, 1, 2, 4), res_blocks=1, attn_resolutions=(16,),
    codebook_size=512, emb_dim=128, dim_embd=256, n_head=4, n_layers=4, dim_mlp=512,
    connect_list=(32, 64),
)

# GFPGAN v1.4 as built by the official GFPGANer (arch="clean", channel_multiplier=2).
_GFPGAN_512 = dict(
    out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8, narrow=1.0,
    input_is_latent=True, different_w=True, sft_half=True,
)
# 64 px, 1/16 of the channels, 2-layer style MLP: milliseconds per face on CPU (tests).
_GFPGAN_TINY = dict(_GFPGAN_512, out_size=64, num_style_feat=64, channel_multiplier=1, num_mlp=2, narrow=0.0625)

_CF = "iqpfr.models.codeformer:CodeFormer"
_IQ = "iqpfr.models.iqpfr:IQPFR"
_GF = "iqpfr.models.gfpgan:GFPGANv1Clean"
_QA = dict(num_buckets=10, mode="bucket")

PRESETS: dict[str, ModelSpec] = {
    "codeformer": ModelSpec(_CF, _CODEFORMER_512, description="official CodeFormer, 512 px"),
    "codeformer-tiny": ModelSpec(_CF, _TINY, description="tiny CodeFormer for tests, 64 px"),
    "codeformer+q": ModelSpec(_CF, _CODEFORMER_512, _QA, "CodeFormer + zero-initialised quality adapter"),
    "codeformer-tiny+q": ModelSpec(_CF, _TINY, _QA, "tiny CodeFormer + quality adapter (tests)"),
    "gfpgan-v1.4": ModelSpec(_GF, _GFPGAN_512, description="official GFPGAN v1.4 (clean), 512 px"),
    "gfpgan-tiny": ModelSpec(_GF, _GFPGAN_TINY, description="tiny GFPGAN for tests, 64 px"),
    "gfpgan-v1.4+q": ModelSpec(_GF, _GFPGAN_512, _QA, "GFPGAN v1.4 + zero-initialised quality adapter"),
    "gfpgan-tiny+q": ModelSpec(_GF, _GFPGAN_TINY, _QA, "tiny GFPGAN + quality adapter (tests)"),
    "iqpfr-512": ModelSpec(_IQ, _CODEFORMER_512, description="IQPFR at paper scale, 512 px"),
    "iqpfr-256": ModelSpec(_IQ, _IQPFR_256, description="IQPFR, 256 px, one-GPU / CPU-inference size"),
    "iqpfr-128": ModelSpec(_IQ, _IQPFR_128, description="IQPFR, 128 px, CPU-trainable fallback"),
    "iqpfr-tiny": ModelSpec(_IQ, _TINY, description="tiny IQPFR for tests, 64 px"),
}


def list_models() -> list[str]:
    """Names accepted by ``create_model``, sorted."""
    return sorted(PRESETS)


# classes buildable from a checkpoint's config without being a preset themselves
EXTRA_CLASSES = (
    "iqpfr.models.autoencoder:VQAutoEncoder",
    # super-resolution networks (background / face up-sampling; see iqpfr.models.rrdbnet)
    "iqpfr.models.rrdbnet:RRDBNet",
    "iqpfr.models.rrdbnet:SRVGGNetCompact",
)

# Networks defined outside ``iqpfr.models`` (a task package of this project, e.g. the underwater
# enhancer, or another distribution) declare themselves as entry points of this group
# (``name = "module:Class"``), so this layer never names a higher one. Read as metadata: nothing is
# imported until a file asks for that class.
ENTRY_POINT_GROUP = "iqpfr.model_classes"


def registered_classes() -> set[str]:
    """``"module:Class"`` strings declared under ``ENTRY_POINT_GROUP`` by installed distributions."""
    from importlib.metadata import entry_points

    return {ep.value.strip() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_classes() -> set[str]:
    return {spec.cls for spec in PRESETS.values()} | set(EXTRA_CLASSES) | registered_classes()


def import_class(path: str) -> type[nn.Module]:
    """Import ``"module:Class"``; only preset classes, ``EXTRA_CLASSES`` and entry-point-registered
    classes may be imported (a checkpoint cannot make iqpfr import arbitrary code)."""
    if path not in known_classes():
        raise ValueError(f"unknown model class {path!r}; known: {sorted(known_classes())}")
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def class_path(model: nn.Module) -> str:
    """``"module:Class"`` of a model instance (the inverse of ``import_class``)."""
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def build_model(cls: str, kwargs: dict[str, Any], quality_adapter: dict[str, Any] | None = None) -> nn.Module:
    """Construct ``cls(**kwargs)``, attach a quality adapter if asked, and record the config."""
    model = import_class(cls)(**kwargs)
    if not isinstance(getattr(model, "config", None), dict):
        model.config = dict(kwargs)  # classes without their own record (e.g. third-party layouts)
    if quality_adapter is not None:
        from iqpfr.models.adapters import attach_quality_adapter

        attach_quality_adapter(model, **quality_adapter)
    return model


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the preset ``name`` (see ``list_models()``), randomly initialised, with constructor
    kwargs overridden. Returns the model in train mode on CPU, like any freshly built ``nn.Module``.

    Networks only: to build one with weights from a file or the zoo, use ``iqpfr.create_model(name,
    weights=...)`` (``iqpfr.weights.checkpoint``) or ``iqpfr.load_model``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    spec = PRESETS[name]
    unknown_adapter = {k: overrides.pop(k) for k in list(overrides) if k.startswith("quality_adapter_")}
    adapter = None
    if spec.quality_adapter is not None:
        adapter = {**spec.quality_adapter, **{k.removeprefix("quality_adapter_"): v for k, v in unknown_adapter.items()}}
    elif unknown_adapter:
        raise ValueError(f"{name!r} has no quality adapter; cannot set {sorted(unknown_adapter)}")
    model = build_model(spec.cls, {**spec.kwargs, **overrides}, adapter)
    model.preset = name
    return model
