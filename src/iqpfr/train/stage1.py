"""Stage I: the dual-codebook VQGAN (method.md §3.1-3.2, §6.1).

Per optimiser step, for HQ faces x with scores S:

    z = E(x);  Zq = VQ_common(z) + alpha * mask(S > S_thr) * VQ_HQ+(z);  x_hat = G(Zq)
    L_G = L1 + w_p * L_perc + d_w * L_GAN^hinge + L_VQ^common + L_VQ^HQ+ (mean over HQ+ faces)
    d_w = clamp(||dL_rec/dW|| / (||dL_GAN/dW|| + 1e-4), 0, 1) * 0.8, W = last conv of G
    L_D = hinge(D(x), D(sg(x_hat)))  (both only from `disc_start` on)

Options: k-means codebook initialisation before step 1, dead-code re-initialisation every N steps
(codes unused over the window are reset to encoder outputs of the current batch). Both run on
rank 0 and are broadcast so all processes keep identical codebooks. ``stage1.frozen`` keeps parts
fixed: with the codebooks and the generator frozen, stage I re-fits only the encoder to them.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from iqpfr.train.base import Stage
from iqpfr.train.discriminator import DiscriminatorPair, VQGANDiscriminator, discriminator_backward
from iqpfr.train.dist import all_reduce_sum_, broadcast_
from iqpfr.train.loader import build_loader, to_device
from iqpfr.train.losses import adaptive_gan_weight, hinge_g_loss, masked_mean
from iqpfr.train.networks import build_autoencoder, codebooks, load_matching, read_weights, set_requires_grad
from iqpfr.train.perceptual import build_perceptual


def quantize_fp32(ae: nn.Module, z: torch.Tensor, quality: torch.Tensor | None):
    """Quantise in fp32 even under autocast: a bf16 nearest-neighbour search picks wrong codes."""
    with torch.autocast(device_type=z.device.type, enabled=False):
        return ae.quantize_latent(z.float(), quality)


class _Stage1Forward(nn.Module):
    """One module whose forward returns every tensor of the generator pass (what DDP wraps)."""

    def __init__(self, ae: nn.Module) -> None:
        super().__init__()
        self.ae = ae

    def forward(self, x: torch.Tensor, quality: torch.Tensor):
        z = self.ae.encode(x)
        q = quantize_fp32(self.ae, z, quality)
        rec = self.ae.generator(q.quant)
        hq_loss = q.hq_loss if q.hq_loss is not None else torch.zeros_like(q.loss)
        hq_mask = q.hq_mask if q.hq_mask is not None else torch.zeros_like(q.loss, dtype=torch.bool)
        hq_idx = q.hq_indices if q.hq_indices is not None else q.indices
        return rec, z, q.loss, hq_loss, hq_mask, q.indices, hq_idx


class Stage1(Stage):
    name = "stage1"

    def __init__(self, ctx, dataset, perceptual: nn.Module | None = None) -> None:
        super().__init__(ctx)
        cfg, s1 = self.cfg, self.cfg.stage1
        self.dataset = dataset
        self.ae = build_autoencoder(cfg)
        self.dual = bool(self.ae.dual_codebook)
        if cfg.model.init is not None:
            source = read_weights(cfg.model.init)
            load_matching(self.ae, source, what=cfg.model.init)
            common, hq = "quantize.embedding.weight", "quantize.embedding_hq.weight"
            if self.dual and common in source and hq not in source:
                # a single-codebook VQGAN (e.g. CodeFormer's) initialises both codebooks (method.md §6.1)
                with torch.no_grad():
                    self.ae.quantize.embedding_hq.weight.copy_(source[common])
        self.ae.to(self.device)
        self.disc = VQGANDiscriminator(nc=3, ndf=s1.disc_channels, n_layers=s1.disc_layers).to(self.device)
        if cfg.data.resolution < self.disc.min_size:
            raise ValueError(f"stage1.disc_layers={s1.disc_layers} needs images of at least "
                             f"{self.disc.min_size} px, got {cfg.data.resolution}")
        self.networks = {"net_g": self.ae, "net_d": self.disc}
        for part in s1.frozen:
            set_requires_grad(getattr(self.ae, part), False)
        self.make_optimizer("g", self.ae.parameters(), cfg.optim.lr)  # frozen parts are left out
        self.make_optimizer("d", self.disc.parameters(), cfg.optim.d_lr or cfg.optim.lr)
        self.g_forward = ctx.wrap(_Stage1Forward(self.ae))
        self.d_pair = ctx.wrap(DiscriminatorPair(self.disc))
        self.ema = self.make_ema(self.ae)  # after DDP's broadcast of rank 0's weights
        self.perceptual = perceptual if perceptual is not None else build_perceptual(s1.perceptual)
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        size = self.ae.quantize.codebook_size
        self.usage = {k: torch.zeros(size, device=self.device) for k in codebooks(self.ae)}
        self._stats: dict[str, float] = {}
        self._window: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------------------- state
    def extra_state(self) -> dict:
        return {"usage": {k: v.cpu() for k, v in self.usage.items()}}

    def load_extra_state(self, state: dict) -> None:
        for k, v in state.get("usage", {}).items():
            self.usage[k] = v.to(self.device)

    # ----------------------------------------------------------------------------- init options
    def on_fresh_start(self) -> None:
        if self.cfg.stage1.kmeans_init:
            self.kmeans_init()

    @torch.no_grad()
    def kmeans_init(self) -> None:
        """Initialise every codebook with k-means centroids of encoder outputs (rank 0, broadcast)."""
        s1 = self.cfg.stage1
        books = codebooks(self.ae)
        if self.ctx.dist.is_main:
            loader = build_loader(self.dataset, self.cfg, type(self.ctx.dist)(), start_sample=0)
            feats = []
            for i, batch in enumerate(loader):
                if i >= s1.kmeans_batches:
                    break
                z = self.ae.encode(to_device(batch, self.device)["gt"]).float()
                feats.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
            data = torch.cat(feats)
            gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
            for book in books.values():
                book.weight.copy_(kmeans(data, book.weight.shape[0], s1.kmeans_iters, gen))
        for book in books.values():
            broadcast_(book.weight.data)
        self.ema = self.make_ema(self.ae)

    @torch.no_grad()
    def reinit_dead_codes(self, z: torch.Tensor) -> dict[str, float]:
        """Reset codes used fewer than ``dead_code_min_usage`` times since the last check to random
        encoder outputs of this batch (from rank 0), and clear their Adam moments."""
        s1 = self.cfg.stage1
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed * 100_003 + int(self.usage["common"].sum()))
        counts = {}
        opt_state = self.optimizers["g"].state
        for key, book in codebooks(self.ae).items():
            usage = all_reduce_sum_(self.usage[key].clone())
            dead = usage < s1.dead_code_min_usage
            counts[f"dead_codes_{key}"] = float(dead.sum())
            if dead.any():
                pick = torch.randint(0, flat.shape[0], (int(dead.sum()),), generator=gen).to(flat.device)
                book.weight.data[dead] = flat[pick] + 1e-3 * flat.std() * torch.randn(
                    len(pick), flat.shape[1], generator=gen).to(flat.device)
                broadcast_(book.weight.data)
                for moment in opt_state.get(book.weight, {}).values():
                    if isinstance(moment, torch.Tensor) and moment.shape == book.weight.shape:
                        moment[dead] = 0
            self.usage[key].zero_()
        return counts

    # ----------------------------------------------------------------------------- step
    def train_step(self, micro_batches: list[dict], step: int) -> dict[str, torch.Tensor]:
        s1, ctx = self.cfg.stage1, self.ctx
        n = len(micro_batches)
        use_gan = step >= s1.disc_start
        opt_g, opt_d = self.optimizers["g"], self.optimizers["d"]
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}

        def add(key: str, value: torch.Tensor) -> None:
            logs[key] = logs.get(key, 0) + value.detach().float() / n

        last_z = None
        for i, batch in enumerate(micro_batches):
            sync = i == n - 1
            gt, score = batch["gt"], batch["score"]
            with ctx.no_sync([self.g_forward], sync):
                with ctx.autocast():
                    rec, z, vq_loss, hq_loss, hq_mask, idx, hq_idx = self.g_forward(gt, score)
                    rec = rec.float()
                    l1 = (rec - gt).abs().mean()
                    rec_loss = s1.l1_weight * l1
                    if self.perceptual is not None and s1.perceptual_weight > 0:
                        perc = self.perceptual(rec, gt)
                        rec_loss = rec_loss + s1.perceptual_weight * perc
                        add("perceptual", perc)
                    vq = s1.vq_weight * vq_loss.mean()
                    total = rec_loss + vq
                    if self.dual:
                        hq = s1.hq_vq_weight * masked_mean(hq_loss, hq_mask)
                        total = total + hq
                        add("vq_hq", hq)
                        add("hq_share", hq_mask.float().mean())
                    if use_gan:
                        set_requires_grad(self.disc, False)
                        g_gan = hinge_g_loss(self.disc(rec))
                        d_w = adaptive_gan_weight(rec_loss, g_gan, self.ae.generator.blocks[-1].weight, scale=s1.gan_weight)
                        total = total + d_w * g_gan
                        add("g_gan", g_gan)
                        add("d_weight", d_w)
                (total / n).backward()
            add("l1", l1)
            add("vq", vq)
            add("loss", total)
            self._count_codes(idx, hq_idx, hq_mask)
            last_z = z
            if use_gan:
                d_loss, real_logits, fake_logits = discriminator_backward(self, gt, rec, n, sync)
                add("loss_d", d_loss)
                add("d_real", real_logits.float().mean())
                add("d_fake", fake_logits.float().mean())
        self.clip_and_step("g")
        if use_gan:
            self.clip_and_step("d")
        self.ema.update(self.ae)
        if s1.dead_code_every > 0 and step % s1.dead_code_every == 0:
            self._stats.update(self.reinit_dead_codes(last_z))
        return logs

    def _count_codes(self, idx: torch.Tensor, hq_idx: torch.Tensor, hq_mask: torch.Tensor) -> None:
        # histograms only (no host sync): usage and perplexity are computed at log time
        size = self.ae.quantize.codebook_size
        counts = torch.bincount(idx.reshape(-1), minlength=size).float()
        self.usage["common"] += counts
        self._window["common"] = self._window.get("common", 0) + counts
        if self.dual:
            weights = hq_mask.float()[:, None].expand_as(hq_idx).reshape(-1)
            counts = torch.bincount(hq_idx.reshape(-1), weights=weights, minlength=size).float()
            self.usage["hq"] += counts
            self._window["hq"] = self._window.get("hq", 0) + counts

    def extra_logs(self) -> dict[str, float]:
        """Learning rates, dead-code counts, and code usage / perplexity over the steps since the
        last log (summed over processes)."""
        out = {**self.lr_logs(), **self._stats}
        for key, counts in self._window.items():
            counts = all_reduce_sum_(counts.clone())
            if float(counts.sum()) > 0:
                p = counts / counts.sum()
                out[f"usage_{key}"] = float((counts > 0).float().mean())
                out[f"perplexity_{key}"] = float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))
        self._stats, self._window = {}, {}
        return out

    @torch.no_grad()
    def sample_rows(self, batch: dict, count: int = 4) -> list[tuple[torch.Tensor, ...]]:
        gt, score = batch["gt"][:count], batch["score"][:count]
        ae = self.ema.shadow
        with self.ctx.autocast():
            rec = ae(gt, score).image.float()
        return [(gt[i], rec[i], gt[i]) for i in range(gt.shape[0])]


def kmeans(data: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means of ``data`` (N, C) into k centroids (k, C); empty clusters take random points."""
    n = data.shape[0]
    if n < k:
        warnings.warn(f"k-means: only {n} vectors for {k} codes; some codes repeat", stacklevel=2)
    centroids = data[torch.randint(0, n, (k,), generator=gen).to(data.device)].clone()
    for _ in range(iters):
        assign = torch.cdist(data, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k).to(data.dtype)
        empty = counts == 0
        centroids = sums / counts.clamp_min(1)[:, None]
        if empty.any():
            centroids[empty] = data[torch.randint(0, n, (int(empty.sum()),), generator=gen).to(data.device)]
    return centroids
