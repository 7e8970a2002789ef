"""PatchGAN discriminator of VQGAN / CodeFormer (``VQGANDiscriminator(nc=3, ndf=64, n_layers=4)``) and
its training step (``discriminator_backward``), shared by the stages that train one."""

from __future__ import annotations

import torch
from torch import nn

from iqpfr.train.losses import hinge_d_loss
from iqpfr.train.networks import set_requires_grad


class VQGANDiscriminator(nn.Module):
    """Convolutional PatchGAN with BatchNorm and LeakyReLU(0.2); one logit per image patch.

    Input (B, nc, H, W) in [-1, 1]; output (B, 1, h, w). Every stride-2 layer halves the size, so
    ``H`` must be at least ``2 ** (n_layers + 1)`` (use fewer layers for tiny test images).
    Parameter names (``main.<i>.weight``) follow CodeFormer's discriminator.
    """

    def __init__(self, *, nc: int = 3, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False),
                   nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)
        self.min_size = 2 ** (n_layers + 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # DCGAN initialisation, as in VQGAN
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class DiscriminatorPair(nn.Module):
    """D on real and fake in two passes (separate BatchNorm statistics) inside one forward, so
    DistributedDataParallel sees a single forward per backward."""

    def __init__(self, disc: nn.Module) -> None:
        super().__init__()
        self.disc = disc

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.disc(real), self.disc(fake)



def discriminator_backward(stage, gt: torch.Tensor, fake: torch.Tensor, n: int, sync: bool):
    """One micro-batch of the hinge discriminator loss on (gt, fake.detach()), backpropagated / n.

    ``stage`` has ``disc``, ``d_pair`` (the DDP-wrapped pair) and ``ctx``; gradients are synchronised
    across processes only when ``sync`` (the last micro-batch). Returns (d_loss, real_logits, fake_logits).
    """
    set_requires_grad(stage.disc, True)
    with stage.ctx.no_sync([stage.d_pair], sync):
        with stage.ctx.autocast():
            real_logits, fake_logits = stage.d_pair(gt, fake.detach())
            d_loss = hinge_d_loss(real_logits, fake_logits)
        (d_loss / n).backward()
    return d_loss, real_logits, fake_logits

