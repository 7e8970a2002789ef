"""Put iqpfr's CPU kernels into a network, in place, for fp32 inference.

    use_cpu_kernels(model)    # after the weights are loaded; returns how many layers now use them

Each eligible layer keeps its parameters and state-dict keys; only its ``forward`` changes, and the
changed forward falls back to the original one for any input the kernels do not take (not a float32
CPU tensor, autograd recording, autocast on). What changes:

* ``nn.Conv2d`` 3x3, stride 1, zero padding 1, no dilation or groups, channels multiples of 8:
  Winograd F(4x4, 3x3) (``cpu_kernels.cpp``), its transformed filter precomputed in float64;
* ``nn.GroupNorm`` with channels a multiple of 8: the two-pass kernel;
* the VQGAN ``ResBlock`` (GroupNorm-SiLU-conv, twice, plus the skip): GroupNorm and SiLU in one pass,
  and the skip added in the second convolution's output pass;
* the StyleGAN2 ``ModulatedConv2d`` (3x3, GFPGAN's decoder): the style scales the input channels in
  the Winograd input pass and the demodulation scales the output channels in the output pass.

Activations flow channels-last (NHWC memory); results are channels-last NCHW tensors, as
``iqpfr.inference.to_channels_last`` networks produce.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType

import torch
from torch import nn

from iqpfr.kernels import load_cpu_kernels
from iqpfr.models.stylegan2 import ModulatedConv2d
from iqpfr.models.vqgan import ResBlock

# F(4x4, 3x3) filter transform G (6x3), interpolation points 0, 1, -1, 2, -2 and infinity; the input
# (B^T) and output (A^T) transforms with the same points are written out in cpu_kernels.cpp.
WINOGRAD_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)
# tiles per thread and chunk: the chunk's transformed inputs and products, 36 * chunk * (C + K) floats,
# are kept near this many bytes so that they stay in cache between the three passes
CHUNK_BYTES = 4 << 20


def winograd_filter(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) convolution weight -> (36, C, K) float32 transformed filter G w G^T per channel pair."""
    if weight.dim() != 4 or weight.shape[2:] != (3, 3):
        raise ValueError(f"expected a (K, C, 3, 3) weight, got {tuple(weight.shape)}")
    g = torch.tensor(WINOGRAD_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.detach().double(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).float().contiguous()


def tiles_per_chunk(channels_in: int, channels_out: int, tiles: int, threads: int) -> int:
    """Tiles one thread transforms and multiplies at a time (see ``CHUNK_BYTES``)."""
    by_cache = CHUNK_BYTES // (36 * 4 * (channels_in + channels_out))
    by_threads = math.ceil(tiles / max(1, threads))  # every thread gets work on small layers
    return int(max(1, min(max(16, by_cache), by_threads)))


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


def _kernel_input(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """True when the kernels may take ``x``: float32 on the CPU, no autograd, no autocast."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        return False
    if _cpu_autocast_enabled():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params)):
        return False
    return True


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()  # free for a channels-last tensor


def _nchw(y: torch.Tensor) -> torch.Tensor:
    return y.permute(0, 3, 1, 2)  # a channels-last NCHW view


def winograd_eligible(conv: nn.Module) -> bool:
    """True for a 3x3, stride-1, zero-padding-1 convolution with channels divisible by 8."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.in_channels % 8 == 0
        and conv.out_channels % 8 == 0
    )


def _chunk(conv: nn.Module, x_nhwc: torch.Tensor) -> int:
    n, h, w, _ = x_nhwc.shape
    tiles = n * math.ceil(h / 4) * math.ceil(w / 4)
    return tiles_per_chunk(conv.in_channels, conv.out_channels, tiles, torch.get_num_threads())


def _winograd(
    kernels: ModuleType, conv: nn.Conv2d, x_nhwc: torch.Tensor, residual_nhwc: torch.Tensor | None = None
) -> torch.Tensor:
    bias = None if conv.bias is None else conv.bias.detach()
    return kernels.winograd_conv3x3(x_nhwc, conv.winograd_filter, bias, residual_nhwc, _chunk(conv, x_nhwc))


def _conv_forward(conv: nn.Conv2d, kernels: ModuleType, original, x: torch.Tensor) -> torch.Tensor:
    if not _kernel_input(x, conv.weight, conv.bias):
        return original(x)
    return _nchw(_winograd(kernels, conv, _nhwc(x)))


def _group_norm(kernels: ModuleType, norm: nn.GroupNorm, x_nhwc: torch.Tensor, silu: bool) -> torch.Tensor:
    return kernels.group_norm(x_nhwc, norm.num_groups, norm.weight.detach(), norm.bias.detach(), norm.eps, silu)


def _group_norm_forward(norm: nn.GroupNorm, kernels: ModuleType, original, x: torch.Tensor) -> torch.Tensor:
    if not _kernel_input(x, norm.weight, norm.bias):
        return original(x)
    return _nchw(_group_norm(kernels, norm, _nhwc(x), silu=False))


def _resblock_forward(block: ResBlock, kernels: ModuleType, original, x: torch.Tensor) -> torch.Tensor:
    if not _kernel_input(x, *block.parameters()):
        return original(x)
    x_nhwc = _nhwc(x)
    h = _winograd(kernels, block.conv1, _group_norm(kernels, block.norm1, x_nhwc, silu=True))
    h = _group_norm(kernels, block.norm2, h, silu=True)
    skip = _nhwc(block.conv_out(x)) if block.in_channels != block.out_channels else x_nhwc
    return _nchw(_winograd(kernels, block.conv2, h, residual_nhwc=skip))


def _modulated_forward(
    conv: ModulatedConv2d, kernels: ModuleType, original, x: torch.Tensor, style: torch.Tensor
) -> torch.Tensor:
    if not _kernel_input(x, *conv.parameters()) or not _kernel_input(style[:, :, None, None]):
        return original(x, style)
    scale, demodulation = conv.channel_scales(style)
    x_nhwc = _nhwc(conv.resample_input(x))
    demodulation = None if demodulation is None else demodulation.contiguous()
    out = kernels.winograd_conv3x3_modulated(
        x_nhwc, conv.winograd_filter, scale.contiguous(), demodulation, _chunk(conv, x_nhwc)
    )
    return _nchw(out)


def _modulated_eligible(conv: ModulatedConv2d) -> bool:
    return conv.weight.shape[-2:] == (3, 3) and conv.in_channels % 8 == 0 and conv.out_channels % 8 == 0


def _resblock_eligible(block: ResBlock) -> bool:
    parts = (block.norm1, block.norm2)
    return (
        winograd_eligible(block.conv1)
        and winograd_eligible(block.conv2)
        and all(type(n) is nn.GroupNorm and n.affine and n.num_channels % 8 == 0 for n in parts)
    )


def _patch(module: nn.Module, forward, kernels: ModuleType) -> None:
    module.forward = functools.partial(forward, module, kernels, module.forward)
    module._iqpfr_cpu_kernels = True


def use_cpu_kernels(model: nn.Module, kernels: ModuleType | None = None) -> int:
    """Route ``model``'s eligible layers through the CPU kernels (in place); returns their number.

    Call it after the weights are final (the Winograd filters are computed here, as non-persistent
    buffers, so ``state_dict`` is unchanged). Raises ``iqpfr.kernels.KernelsUnavailable`` when the
    kernels cannot be built. Calling it twice changes nothing more.
    """
    kernels = kernels or load_cpu_kernels()
    changed = 0
    for module in model.modules():
        if getattr(module, "_iqpfr_cpu_kernels", False):
            continue
        if isinstance(module, nn.Conv2d) and winograd_eligible(module):
            module.register_buffer("winograd_filter", winograd_filter(module.weight), persistent=False)
            _patch(module, _conv_forward, kernels)
            changed += 1
        elif type(module) is nn.GroupNorm and module.affine and module.num_channels % 8 == 0:
            _patch(module, _group_norm_forward, kernels)
            changed += 1
        elif isinstance(module, ModulatedConv2d) and _modulated_eligible(module):
            module.register_buffer("winograd_filter", winograd_filter(module.weight[0]), persistent=False)
            _patch(module, _modulated_forward, kernels)
            changed += 1
    # after the convolutions: the block's forward reads its convolutions' filters
    for module in model.modules():
        if isinstance(module, ResBlock) and not getattr(module, "_iqpfr_cpu_kernels", False):
            if _resblock_eligible(module):
                _patch(module, _resblock_forward, kernels)
                changed += 1
    return changed
