"""Stage II with image targets (``stage2.targets: image``): fine-tune a whole restoration network
on the restored face itself, for networks without a codebook (GFPGAN) or to plug a quality adapter
into an existing model with its original image losses (method.md §9).

For an LQ face y (large degradation) whose GT x has score S:

    x_hat = net(y, w = image.fidelity_w, quality = S)      (the adapter / embedding sees S)
    L = l1_w * |x_hat - x| + perc_w * P(x_hat, x) + gan_w * hinge_G(D(x_hat))   (GAN from disc_start)
        + q_w * relu(1 - Q(x_hat))                                             (from quality_start)

``stage2.train_only`` names the trained parameter prefixes (``[quality_adapter.]``: only the
plug-in embedding; everything else keeps the official weights bit for bit). The GAN term uses a
fixed weight (an adaptive one needs the generator's last layer to be trainable) and a PatchGAN
discriminator trained alongside; it is off by default.
"""

from __future__ import annotations

import torch
from torch import nn

from iqpfr.train.base import Stage
from iqpfr.train.discriminator import DiscriminatorPair, VQGANDiscriminator, discriminator_backward
from iqpfr.train.losses import hinge_g_loss, quality_loss
from iqpfr.train.networks import init_complete_model, set_requires_grad
from iqpfr.train.perceptual import build_perceptual


class _ImageForward(nn.Module):
    """The restoration pass as one module (what DDP wraps): raw image (B, 3, S, S)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq: torch.Tensor, quality: torch.Tensor, w: float) -> torch.Tensor:
        return self.model(lq, w=w, quality=quality).image


class ImageTargetStage(Stage):
    name = "stage2-image"

    def __init__(self, ctx, dataset, perceptual: nn.Module | None = None, scorer: nn.Module | None = None) -> None:
        super().__init__(ctx)
        cfg, s2 = self.cfg, self.cfg.stage2
        im = s2.image
        self.model = init_complete_model(cfg).to(self.device)
        if s2.train_only:
            for name, p in self.model.named_parameters():
                if not name.startswith(tuple(s2.train_only)):
                    p.requires_grad_(False)
        self.networks = {"net_g": self.model}
        self.make_optimizer("g", self.model.parameters(), cfg.optim.lr, self.quality_lr_scales(self.model))
        self.forward_net = ctx.wrap(_ImageForward(self.model))
        self.disc = None
        if im.gan_weight > 0:
            self.disc = VQGANDiscriminator(nc=3, ndf=im.disc_channels, n_layers=im.disc_layers).to(self.device)
            if cfg.data.resolution < self.disc.min_size:
                raise ValueError(f"stage2.image.disc_layers={im.disc_layers} needs images of at least "
                                 f"{self.disc.min_size} px, got {cfg.data.resolution}")
            self.networks["net_d"] = self.disc
            self.make_optimizer("d", self.disc.parameters(), cfg.optim.d_lr or cfg.optim.lr)
            self.d_pair = ctx.wrap(DiscriminatorPair(self.disc))
        self.ema = self.make_ema(self.model)  # after DDP's broadcast of rank 0's weights
        self.perceptual = perceptual if perceptual is not None else build_perceptual(im.perceptual)
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        self.scorer = self.frozen_scorer(s2.quality_scorer, scorer) if s2.quality_weight > 0 else None

    def train_step(self, micro_batches: list[dict], step: int) -> dict[str, torch.Tensor]:
        s2, ctx = self.cfg.stage2, self.ctx
        im = s2.image
        n = len(micro_batches)
        use_gan = self.disc is not None and step >= im.disc_start
        use_quality = self.scorer is not None and step >= s2.quality_start
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}

        def add(key: str, value: torch.Tensor) -> None:
            logs[key] = logs.get(key, 0) + value.detach().float() / n

        for i, batch in enumerate(micro_batches):
            sync = i == n - 1
            gt = batch["gt"]
            with ctx.no_sync([self.forward_net], sync):
                with ctx.autocast():
                    out = self.forward_net(batch["lq"], batch["score"], im.fidelity_w).float()
                    l1 = (out - gt).abs().mean()
                    total = im.l1_weight * l1
                    add("l1", l1)
                    if self.perceptual is not None and im.perceptual_weight > 0:
                        perc = self.perceptual(out, gt)
                        total = total + im.perceptual_weight * perc
                        add("perceptual", perc)
                    if use_gan:
                        set_requires_grad(self.disc, False)
                        g_gan = hinge_g_loss(self.disc(out))
                        total = total + im.gan_weight * g_gan
                        add("g_gan", g_gan)
                    if use_quality:
                        mask = batch["score"] >= s2.quality_min_condition if s2.quality_min_condition > 0 else None
                        q_loss, q_mean = quality_loss(self.scorer, out, mask)
                        total = total + s2.quality_weight * q_loss
                        if not torch.isnan(q_mean):
                            add("quality", q_mean)
                (total / n).backward()
            add("loss", total)
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
        lq, gt = batch["lq"][:count], batch["gt"][:count]
        with self.ctx.autocast():
            out = self.ema.shadow(lq, w=self.cfg.stage2.image.fidelity_w, quality=0.9).image.float()
        return [(lq[i], out[i], gt[i]) for i in range(lq.shape[0])]
