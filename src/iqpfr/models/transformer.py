"""The code-prediction Transformer layers of CodeFormer (method.md §3.3).

Tokens are batch-first here, (B, L, D); the official code is sequence-first, which changes no
number. Parameter names follow ``nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``,
``out_proj``) so released checkpoints load unchanged, but the attention itself is computed with
``scaled_dot_product_attention`` (fused kernels on GPU, exportable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadSelfAttention(nn.Module):
    """Multi-head attention with separate query/key and value inputs (queries = keys here).

    Shapes: ``qk`` and ``v`` (B, L, D) -> (B, L, D).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, qk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, d = v.shape
        h = self.num_heads
        w, bias = self.in_proj_weight, self.in_proj_bias
        q, k = F.linear(qk, w[: 2 * d], bias[: 2 * d]).chunk(2, dim=-1)
        v = F.linear(v, w[2 * d :], bias[2 * d :])

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, H, L, D/H)
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerSALayer(nn.Module):
    """Pre-LN self-attention layer; the positional embedding is added to queries and keys only."""

    def __init__(self, embed_dim: int, num_heads: int, dim_mlp: int) -> None:
        super().__init__()
        self.self_attn = MultiheadSelfAttention(embed_dim, num_heads)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), pos (L, D) -> (B, L, D)."""
        y = self.norm1(x)
        x = x + self.self_attn(y + pos, y)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))
