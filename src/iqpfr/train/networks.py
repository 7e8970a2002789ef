"""Networks the stages build and initialise: the configured preset, its stage-I autoencoder, weights
read from runs / files / the zoo, and the code-prediction pass of stages II and III.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

DECODE_NONE, DECODE_DISCRETE, DECODE_CONTINUOUS = 0, 1, 2
NEW_PREFIXES = ("quality_adapter.",)  # the only tensors model.init may lack: the zero-initialised plug-in


def build_model_preset(cfg) -> nn.Module:
    """The full network of preset ``cfg.model.name`` with ``cfg.model.overrides``; alpha and the HQ+
    threshold come from the config (for presets that have them)."""
    from iqpfr.models.factory import create_model

    overrides = dict(cfg.model.overrides)
    model = create_model(cfg.model.name, **overrides)
    quantize = getattr(model, "quantize", None)
    if hasattr(quantize, "embedding_hq"):
        quantize.alpha = cfg.model.alpha
        quantize.hq_threshold = cfg.model.hq_threshold
        model.alpha = cfg.model.alpha
        model.config.update(alpha=cfg.model.alpha, hq_threshold=cfg.model.hq_threshold)
    return model


def build_autoencoder(cfg) -> nn.Module:
    """The stage-I ``VQAutoEncoder`` whose weights fit the configured preset (keys ``encoder.*``,
    ``quantize.*``, ``generator.*``)."""
    from iqpfr.models.autoencoder import VQAutoEncoder

    model = build_model_preset(cfg)
    if not hasattr(model, "quantize"):  # e.g. GFPGAN: no VQGAN inside, so no code targets
        raise ValueError(f"model {cfg.model.name!r} has no codebook, so it has no VQGAN autoencoder or code "
                         "targets; fine-tune it on images instead: stage2.targets=image")
    return VQAutoEncoder.matching(model)


def codebooks(ae: nn.Module) -> dict[str, nn.Embedding]:
    """{"common": ..., "hq": ...} embedding tables of an autoencoder (or full model)."""
    books = {"common": ae.quantize.embedding}
    if hasattr(ae.quantize, "embedding_hq"):
        books["hq"] = ae.quantize.embedding_hq
    return books


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict from ``.safetensors``, an official ``.pth`` (``params_ema``), a training checkpoint
    (its EMA network) or a weight-zoo name (e.g. ``codeformer``: the cached, sha256-checked file)."""
    path = Path(path)
    if not path.is_file():
        from iqpfr.weights.zoo import ZOO

        if str(path) not in ZOO:
            raise FileNotFoundError(f"{path}: weights to initialise from not found")
        from iqpfr.weights.cache import resolve_weights

        path = Path(resolve_weights(str(path)))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        from iqpfr.weights.checkpoint import pop_config_tensor

        return pop_config_tensor(load_file(str(path)))[0]
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "stage" in state:
        stage = state["stage"]
        return stage["ema"] if stage.get("ema") is not None else next(iter(stage["networks"].values()))
    for key in ("params_ema", "params", "state_dict"):
        if isinstance(state, dict) and key in state:
            return state[key]
    return state


def load_matching(model: nn.Module, source: dict[str, torch.Tensor], *, what: str,
                  require_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Copy every tensor of ``source`` whose key and shape exist in ``model``; return the model keys
    left untouched. Raises if a source key under ``require_prefixes`` has no place in the model."""
    target = model.state_dict()
    used, problems = {}, []
    for k, v in source.items():
        if k in target and target[k].shape == v.shape:
            used[k] = v
        elif k.startswith(require_prefixes):
            problems.append(k if k not in target else f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}")
    if problems:
        raise ValueError(f"{what}: {len(problems)} tensors do not fit the model, e.g. {problems[:3]}")
    if not used:
        raise ValueError(f"{what}: no tensor matches the model (wrong file or preset?)")
    model.load_state_dict(used, strict=False)
    return sorted(set(target) - set(used))


def init_restoration_model(cfg, frozen: tuple[str, ...], untouched: list[str] | None = None) -> nn.Module:
    """The preset network with ``cfg.model.init`` weights (stage-I VQGAN or a stage-II/III model) and
    the parameters under ``frozen`` prefixes set to ``requires_grad=False``. ``untouched`` (if given)
    receives the model keys the file did not provide."""
    model = build_model_preset(cfg)
    left = load_matching(model, read_weights(cfg.model.init), what=str(cfg.model.init),
                         require_prefixes=("encoder.", "quantize.", "generator."))
    if untouched is not None:
        untouched.extend(left)
    for name, p in model.named_parameters():
        if name.startswith(frozen):
            p.requires_grad_(False)
    return model


def init_complete_model(cfg) -> nn.Module:
    """The preset network with every tensor from ``cfg.model.init`` except a new quality adapter;
    raises ValueError naming the file if a tensor does not fit or is missing."""
    model = build_model_preset(cfg)
    untouched = load_matching(model, read_weights(cfg.model.init), what=str(cfg.model.init), require_prefixes=("",))
    missing = [k for k in untouched if not k.startswith(NEW_PREFIXES)]
    if missing:
        raise ValueError(f"{cfg.model.init}: {len(missing)} tensors of {cfg.model.name} are not in the file "
                         f"(e.g. {missing[:3]}); stage2.targets=image fine-tunes a complete network")
    return model


class CodePredictionForward(nn.Module):
    """The generator pass of stages II/III as one module (what DDP wraps).

    ``decode``: DECODE_NONE (code prediction only), DECODE_DISCRETE (predicted codes, straight-through
    to lq_feat, w = 0) or DECODE_CONTINUOUS (lq_feat decoded directly).
    Returns (lq_feat, logits, hq_logits or None, image or None).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq: torch.Tensor, quality: torch.Tensor, decode: int = DECODE_NONE,
                w: float = 0.0, straight_through: bool = True):
        m = self.model
        lq_feat, skips = m.encode(lq)
        lq_feat = m.condition(lq_feat, quality)
        logits, hq_logits = m.predict_logits(lq_feat)
        image = None
        if decode == DECODE_DISCRETE:
            idx = logits.argmax(dim=-1)
            hq_idx = hq_logits.argmax(dim=-1) if hq_logits is not None else None
            quant = m.lookup(idx, hq_idx, straight_through_from=lq_feat if straight_through else None)
            image = m.decode(quant, skips, w)
        elif decode == DECODE_CONTINUOUS:
            image = m.decode(lq_feat, skips, w)
        return lq_feat, logits, hq_logits, image

