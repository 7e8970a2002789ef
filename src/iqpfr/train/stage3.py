"""Stage III: the fidelity fusion ``w`` (CodeFormer stage III, method.md §6.3), quality condition on.

Schedule (steps; defaults are CodeFormer's 40k / 80k / 120k and 15):

    step <= e0       : small degradation, w = w_first (1.0), all losses
    step <= e1       : small degradation, w = w_later (1.3), all losses
    step <= e2       : large degradation, code-only (CE + feat)
    step >  e2       : every `small_every`-th step as in the second phase, otherwise code-only

``image_large_share`` of the image steps take the large-degradation input instead (our option).
Image steps decode the predicted codes (detached from lq_feat, CodeFormer's ``detach_16``) through
the frozen generator and the trained fusion blocks: L1 + perceptual + adaptive GAN (scale 0.1,
gradient norm taken at the last conv of the highest-resolution fusion block's ``shift`` branch)
+ CE + feat. Frozen: both codebooks and the generator; the discriminator starts at `disc_start`.
"""

from __future__ import annotations

import torch
from torch import nn

from iqpfr.train.base import Stage
from iqpfr.train.discriminator import DiscriminatorPair, VQGANDiscriminator, discriminator_backward
from iqpfr.train.losses import adaptive_gan_weight, code_losses, hinge_g_loss
from iqpfr.train.networks import (
    DECODE_DISCRETE,
    DECODE_NONE,
    CodePredictionForward,
    init_restoration_model,
    read_weights,
    set_requires_grad,
)
from iqpfr.train.perceptual import build_perceptual
from iqpfr.train.targets import build_targets

FROZEN_PREFIXES = ("quantize.", "generator.")


def phase(step: int, s3) -> tuple[bool, float]:
    """(image step?, w) of ``step`` under the Stage3Config schedule ``s3``."""
    e0, e1, e2 = s3.phase_ends
    if step <= e0:
        return True, s3.w_first
    if step <= e1:
        return True, s3.w_later
    if step <= e2:
        return False, 0.0
    return step % s3.small_every == 0, s3.w_later


def large_input(step: int, share: float) -> bool:
    """Whether image step ``step`` takes the large-degradation input: ``share`` of the steps, evenly spread."""
    return int((step + 1) * share) > int(step * share)


class Stage3(Stage):
    name = "stage3"

    def __init__(self, ctx, dataset, perceptual: nn.Module | None = None) -> None:
        super().__init__(ctx)
        cfg, s3 = self.cfg, self.cfg.stage3
        self.model = init_restoration_model(cfg, FROZEN_PREFIXES).to(self.device)
        self.targets = build_targets(cfg, self.device)
        self.disc = VQGANDiscriminator(nc=3, ndf=s3.disc_channels, n_layers=s3.disc_layers)
        if cfg.model.init_discriminator:
            state = read_weights_discriminator(cfg.model.init_discriminator)
            self.disc.load_state_dict(state)
        self.disc.to(self.device)
        self.networks = {"net_g": self.model, "net_d": self.disc}
        self.make_optimizer("g", self.model.parameters(), cfg.optim.lr, self.quality_lr_scales(self.model))
        self.make_optimizer("d", self.disc.parameters(), cfg.optim.d_lr or cfg.optim.lr)
        # code-only steps leave the fusion blocks unused: DDP must tolerate that
        self.forward_net = ctx.wrap(CodePredictionForward(self.model), find_unused=True)
        self.d_pair = ctx.wrap(DiscriminatorPair(self.disc))
        self.ema = self.make_ema(self.model)  # after DDP's broadcast of rank 0's weights
        self.perceptual = perceptual if perceptual is not None else build_perceptual(s3.perceptual)
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        top = str(max(int(r) for r in self.model.connect_list))
        self.last_layer = self.model.fuse_convs_dict[top].shift[-1].weight

    def train_step(self, micro_batches: list[dict], step: int) -> dict[str, torch.Tensor]:
        s3, ctx = self.cfg.stage3, self.ctx
        n = len(micro_batches)
        image_step, w = phase(step, s3)
        use_gan = image_step and step >= s3.disc_start
        opt_g, opt_d = self.optimizers["g"], self.optimizers["d"]
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}

        def add(key: str, value: torch.Tensor) -> None:
            logs[key] = logs.get(key, 0) + value.detach().float() / n

        for i, batch in enumerate(micro_batches):
            sync = i == n - 1
            idx, hq_idx, target = self.targets(batch)
            lq = batch["lq_small"] if image_step and not large_input(step, s3.image_large_share) else batch["lq"]
            gt = batch["gt"]
            with ctx.no_sync([self.forward_net], sync):
                with ctx.autocast():
                    lq_feat, logits, hq_logits, out = self.forward_net(
                        lq, batch["score"], DECODE_DISCRETE if image_step else DECODE_NONE, w, False)
                    total = code_losses(lq_feat, logits, hq_logits, idx, hq_idx, target,
                                        feat_w=s3.feat_weight, ce_w=s3.ce_weight, add=add)
                    if image_step:
                        out = out.float()
                        l1 = (out - gt).abs().mean()
                        rec_loss = s3.l1_weight * l1
                        add("l1", l1)
                        if self.perceptual is not None and s3.perceptual_weight > 0:
                            perc = self.perceptual(out, gt)
                            rec_loss = rec_loss + s3.perceptual_weight * perc
                            add("perceptual", perc)
                        total = total + rec_loss
                        if use_gan:
                            set_requires_grad(self.disc, False)
                            g_gan = hinge_g_loss(self.disc(out))
                            d_w = adaptive_gan_weight(rec_loss, g_gan, self.last_layer, scale=s3.gan_weight)
                            total = total + d_w * g_gan
                            add("g_gan", g_gan)
                            add("d_weight", d_w)
                (total / n).backward()
            add("loss", total)
            add("image_step", torch.tensor(float(image_step)))
            if use_gan:
                d_loss, _, _ = discriminator_backward(self, gt, out, n, sync)
                add("loss_d", d_loss)
        self.clip_and_step("g")
        if use_gan:
            self.clip_and_step("d")
        self.ema.update(self.model)
        return logs

    @torch.no_grad()
    def sample_rows(self, batch: dict, count: int = 4) -> list[tuple[torch.Tensor, ...]]:
        lq, gt = batch["lq_small"][:count], batch["gt"][:count]
        _, w = phase(self.cfg.stage3.phase_ends[0], self.cfg.stage3)
        with self.ctx.autocast():
            out = self.ema.shadow(lq, w=w, quality=0.9).image.float()
        return [(lq[i], out[i], gt[i]) for i in range(lq.shape[0])]


def read_weights_discriminator(path: str) -> dict[str, torch.Tensor]:
    """A discriminator state dict from a stage-I run checkpoint (``net_d``) or a .safetensors file."""
    from pathlib import Path

    if Path(path).suffix == ".safetensors":
        return read_weights(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return state["stage"]["networks"]["net_d"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: no discriminator (networks.net_d) in this checkpoint") from exc
