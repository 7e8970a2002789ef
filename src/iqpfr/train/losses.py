"""Losses shared by the stage step functions: GAN hinge and balance, VQ masks, code prediction,
quality."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -mean(D(fake))."""
    return -fake_logits.float().mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        *, scale: float, max_weight: float = 1.0) -> torch.Tensor:
    """VQGAN's balance: clamp(||dL_rec/dW|| / (||dL_gan/dW|| + 1e-4), 0, max_weight) * scale.

    ``W`` is the weight of the generator's last conv; the result is detached (a pure weight).
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach() * scale


def masked_mean(per_sample: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_sample`` (B,) over the samples where ``mask`` (B,) is true; 0 (with grad) if none.

    Dividing by the batch size rather than the count would make the HQ+ loss scale with the share
    of HQ+ faces in the batch; dividing by the count keeps its scale fixed.
    """
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum() / mask.sum().clamp_min(1.0)


def per_sample_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token cross-entropy: logits (B, N, K), targets (B, N) -> scalar mean."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1).long())


def code_losses(lq_feat, logits, hq_logits, idx, hq_idx, target, *, feat_w: float, ce_w: float,
                add) -> torch.Tensor:
    """feat_w * MSE(lq_feat, target) + ce_w * (CE(common) + CE(HQ+)); logs through ``add``."""
    feat = F.mse_loss(lq_feat.float(), target.float())
    ce = per_sample_cross_entropy(logits, idx)
    total = feat_w * feat + ce_w * ce
    add("feat", feat)
    add("ce", ce)
    add("acc", (logits.argmax(-1) == idx).float().mean())
    if hq_logits is not None and hq_idx is not None:
        ce_hq = per_sample_cross_entropy(hq_logits, hq_idx)
        total = total + ce_w * ce_hq
        add("ce_hq", ce_hq)
        add("acc_hq", (hq_logits.argmax(-1) == hq_idx).float().mean())
    return total



def quality_loss(scorer: nn.Module, image: torch.Tensor,
                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(relu(1 - mean normalised score), mean normalised score) of images in [-1, 1].

    Scores are mapped to [0, 1] with the scorer's ``range`` and flipped for lower-is-better
    metrics; the hinge (IQPIR's 0.2 * ReLU(1 - q) form) stops pushing once the batch reaches the
    scorer's "clean" level, which leaves less room to over-optimise the metric. ``mask`` (B, bool)
    restricts the loss to some samples; with none selected the loss is 0.
    """
    if mask is not None:
        if not bool(mask.any()):
            return image.sum() * 0.0, image.new_tensor(float("nan"))
        image = image[mask]
    x = ((image.float() + 1) / 2).clamp(0, 1)
    raw = scorer.score(x) if hasattr(scorer, "score") else scorer(x).reshape(-1)
    lo, hi = getattr(scorer, "range", (0.0, 1.0))
    q = (raw.float() - lo) / (hi - lo)
    if not getattr(scorer, "higher_better", True):
        q = 1 - q
    return torch.relu(1 - q.mean()), q.mean().detach()

