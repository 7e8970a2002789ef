"""GAN, VQ and codebook-statistics helpers shared by the stage step functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
