"""Stage II: quality-conditioned code prediction + discrete quality optimisation (§6.2, §7).

For an LQ face y (large degradation) whose GT x has score S:

    lq_feat = E(y) + embed(floor(10 S))            (the quality condition)
    logits, hq_logits = T(lq_feat)
    L = feat_w * MSE(lq_feat, sg(common[i1] + alpha HQ+[i0]))
        + ce_w * (CE(logits, i1) + CE(hq_logits, i0))                (0.5 each by default)
        + q_w * relu(1 - Q(G(lq_feat + sg(quant - lq_feat))))   from `quality_start` on

``Q`` is any differentiable QualityScorer (default: the project's learned face scorer), scores
mapped to [0, 1] higher-better. The decoder only ever sees discrete codebook features: the
straight-through path copies the quality gradient to lq_feat (encoder and score embedding) but
not to the logits or the codebooks. ``quality_space: continuous`` (the ablation) decodes lq_feat
itself instead, i.e. optimises quality in the continuous feature space.
Frozen: both codebooks, the generator and the (unused, w = 0) fusion blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from iqpfr.train.base import Stage
from iqpfr.train.losses import code_losses, quality_loss
from iqpfr.train.networks import (
    DECODE_CONTINUOUS,
    DECODE_DISCRETE,
    DECODE_NONE,
    CodePredictionForward,
    init_restoration_model,
)
from iqpfr.train.targets import build_targets

FROZEN_PREFIXES = ("quantize.", "generator.", "fuse_convs_dict.")


@torch.no_grad()
def reset_quality_rows(model: nn.Module) -> int:
    """Copy the quality-embedding row of ``model.default_quality`` into every row; returns that row's
    index. The output at the default quality is unchanged; every other target then gives the same."""
    embed = getattr(model, "quality_embed", None)
    if embed is None:
        raise ValueError("stage2.quality_rows_reset: the model has no quality embedding")
    row = int(embed.bucket(torch.tensor([model.default_quality]))[0])
    embed.weight.copy_(embed.weight[row].expand_as(embed.weight).clone())
    return row


def line_offsets(num_rows: int, anchor: int, device=None, dtype=None) -> torch.Tensor:
    """(num_rows,) offsets of the rows along the quality line: (k - anchor) / max|k - anchor|."""
    k = torch.arange(num_rows, device=device, dtype=dtype)
    span = max(anchor, num_rows - 1 - anchor)
    return (k - anchor) / span


@torch.no_grad()
def project_quality_rows_to_line(model: nn.Module, anchor: int) -> torch.Tensor:
    """Rows become ``row[anchor] + o_k * v``, ``v`` the least-squares direction of the current rows
    (``sum_k o_k (row_k - row[anchor]) / sum_k o_k^2``); returns ``v`` (D,)."""
    weight = model.quality_embed.weight
    offsets = line_offsets(weight.shape[0], anchor, weight.device, weight.dtype)
    base = weight[anchor].clone()
    direction = (offsets[:, None] * (weight - base)).sum(0) / offsets.pow(2).sum()
    weight.copy_(base + offsets[:, None] * direction)
    return direction


class Stage2(Stage):
    name = "stage2"

    def __init__(self, ctx, dataset, scorer: nn.Module | None = None) -> None:
        super().__init__(ctx)
        cfg, s2 = self.cfg, self.cfg.stage2
        untouched: list[str] = []
        self.model = init_restoration_model(cfg, FROZEN_PREFIXES, untouched).to(self.device)
        if s2.train_only:
            for name, p in self.model.named_parameters():
                if not name.startswith(tuple(s2.train_only)):
                    p.requires_grad_(False)
            # tuning part of a finished model: what stays fixed should come from the file, not random init
            fixed = [k for k in untouched if not k.startswith(tuple(s2.train_only))]
            if fixed:
                import warnings

                warnings.warn(f"{cfg.model.init}: stage2.train_only keeps {len(fixed)} tensors fixed at their "
                              f"random initialisation, the file does not provide them (e.g. {fixed[:3]}): "
                              "wrong file or model.name?", stacklevel=2)
        self.quality_anchor = None
        if s2.quality_rows_line:
            if getattr(self.model, "quality_embed", None) is None:
                raise ValueError("stage2.quality_rows_line: the model has no quality embedding")
            if cfg.optim.weight_decay > 0:  # decay would move the fixed row despite its zero gradient
                raise ValueError("stage2.quality_rows_line needs optim.weight_decay=0")
            embed = self.model.quality_embed
            self.quality_anchor = int(embed.bucket(torch.tensor([self.model.default_quality]))[0])
            anchor = self.quality_anchor
            # the default quality's row is the line's fixed point: no gradient, so Adam never moves it
            embed.weight.register_hook(lambda grad: grad.index_fill(0, torch.tensor([anchor], device=grad.device), 0))
        self.targets = build_targets(cfg, self.device)
        self.networks = {"net_g": self.model}
        self.make_optimizer("g", self.model.parameters(), cfg.optim.lr, self.quality_lr_scales(self.model))
        self.forward_net = ctx.wrap(CodePredictionForward(self.model))
        self.ema = self.make_ema(self.model)  # after DDP's broadcast of rank 0's weights
        self.scorer = self.frozen_scorer(s2.quality_scorer, scorer) if s2.quality_weight > 0 else None

    def on_fresh_start(self) -> None:
        if self.cfg.stage2.quality_rows_reset or self.cfg.stage2.quality_rows_line:
            reset_quality_rows(self.model)
            self.ema = self.make_ema(self.model)

    def train_step(self, micro_batches: list[dict], step: int) -> dict[str, torch.Tensor]:
        s2, ctx = self.cfg.stage2, self.ctx
        n = len(micro_batches)
        use_quality = self.scorer is not None and step >= s2.quality_start
        decode = DECODE_NONE
        if use_quality:
            decode = DECODE_CONTINUOUS if s2.quality_space == "continuous" else DECODE_DISCRETE
        opt = self.optimizers["g"]
        opt.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}

        def add(key: str, value: torch.Tensor) -> None:
            logs[key] = logs.get(key, 0) + value.detach().float() / n

        for i, batch in enumerate(micro_batches):
            idx, hq_idx, target = self.targets(batch)
            with ctx.no_sync([self.forward_net], i == n - 1):
                with ctx.autocast():
                    lq_feat, logits, hq_logits, image = self.forward_net(batch["lq"], batch["score"], decode)
                    total = code_losses(lq_feat, logits, hq_logits, idx, hq_idx, target,
                                        feat_w=s2.feat_weight, ce_w=s2.ce_weight, add=add)
                    if use_quality:
                        mask = batch["score"] >= s2.quality_min_condition if s2.quality_min_condition > 0 else None
                        q_loss, q_mean = quality_loss(self.scorer, image, mask)
                        total = total + s2.quality_weight * q_loss
                        if not torch.isnan(q_mean):
                            add("quality", q_mean)
                (total / n).backward()
            add("loss", total)
        self.clip_and_step("g")
        if self.quality_anchor is not None:
            direction = project_quality_rows_to_line(self.model, self.quality_anchor)
            logs["quality_line_rms"] = direction.pow(2).mean().sqrt()
        self.ema.update(self.model)
        return logs

    @torch.no_grad()
    def sample_rows(self, batch: dict, count: int = 4) -> list[tuple[torch.Tensor, ...]]:
        lq, gt = batch["lq"][:count], batch["gt"][:count]
        with self.ctx.autocast():
            out = self.ema.shadow(lq, w=0.0, quality=0.9).image.float()
        return [(lq[i], out[i], gt[i]) for i in range(lq.shape[0])]
