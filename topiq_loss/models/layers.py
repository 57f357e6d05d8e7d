"""Building blocks of CFANet: attention layers and gated local pooling.

Parameter names follow the official checkpoints (which were saved from
``nn.MultiheadAttention``-based layers) so that they load with ``strict=True``;
the computation uses batch-first tokens and ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "Attention",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "LayerStack",
    "gated_local_pool",
    "gated_pool",
    "feature_distance",
    "gate_net",
]

#: eps of the feature distance sqrt((a - b)^2 + eps), as in the published model.
DISTANCE_EPS = 1e-12


class Attention(nn.Module):
    """Multi-head attention on batch-first tokens.

    Holds ``in_proj_weight`` (3C, C), ``in_proj_bias`` (3C,) and ``out_proj``
    like ``nn.MultiheadAttention`` so official weights load unchanged.

    Shape:
        - query: (N, Lq, C); key_value: (N, Lk, C) or None for self-attention.
        - Output: (N, Lq, C).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"`dim` ({dim}) must be divisible by `num_heads` ({num_heads})")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.kaiming_normal_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        return x.view(n, length, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor | None = None) -> torch.Tensor:
        dim = query.shape[-1]
        if key_value is None:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q = F.linear(query, self.in_proj_weight[:dim], self.in_proj_bias[:dim])
            k, v = F.linear(key_value, self.in_proj_weight[dim:], self.in_proj_bias[dim:]).chunk(
                2, dim=-1
            )
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        n, _, length, _ = out.shape
        return cast(torch.Tensor, self.out_proj(out.transpose(1, 2).reshape(n, length, dim)))


class _FeedForward(nn.Module):
    """Shared pieces of the two layer types: the MLP with its names."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        for lin in (self.linear1, self.linear2):
            nn.init.kaiming_normal_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.linear2(F.gelu(self.linear1(x))))


class SelfAttentionLayer(_FeedForward):
    """Pre-norm transformer encoder layer (no dropout: the loss is inference-only).

    Shape: (N, L, C) -> (N, L, C).
    """

    def __init__(self, dim: int = 256, num_heads: int = 4, hidden: int = 1024) -> None:
        super().__init__(dim, hidden)
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))
        return x + self._mlp(self.norm2(x))


class CrossAttentionLayer(_FeedForward):
    """Pre-norm decoder layer: queries attend to a normalised memory.

    ``self_attn`` exists only because the official checkpoints contain it; the
    published model never calls it, and neither does this one.

    Shape: query (N, Lq, C), memory (N, Lk, C) -> (N, Lq, C).
    """

    def __init__(self, dim: int = 256, num_heads: int = 4, hidden: int = 1024) -> None:
        super().__init__(dim, hidden)
        self.self_attn = Attention(dim, num_heads)
        self.multihead_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = query + self.multihead_attn(self.norm1(query), self.norm2(memory))
        return cast(torch.Tensor, x + self._mlp(self.norm3(x)))


class LayerStack(nn.Module):
    """A sequence of layers kept under ``layers.<i>`` (the checkpoint's naming)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, *memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, *memory)
        return x


def gate_net(channels: int) -> nn.Sequential:
    """The gate of both fronts: C -> 64 (1x1) -> 64 (3x3) -> 1 (3x3), GELU between, sigmoid.

    Shape: (N, C, h, w) -> (N, 1, h, w) in (0, 1).
    """
    return nn.Sequential(
        nn.Conv2d(channels, 64, 1),
        nn.GELU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(64, 1, 3, padding=1),
        nn.Sigmoid(),
    )


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise ``sqrt((a - b)^2 + eps)``, computed in at least float32.

    In float16 the eps (1e-12) underflows to zero and the gradient of sqrt at 0 is
    inf; float32 keeps identical inputs finite. The result has ``a``'s dtype.
    """
    wide = torch.promote_types(a.dtype, torch.float32)
    d = torch.sqrt((a.to(wide) - b.to(wide)).square() + DISTANCE_EPS)
    return d.to(a.dtype)


def gated_local_pool(
    dist: torch.Tensor,
    ref: torch.Tensor,
    gate_net: nn.Module,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated local pooling (GLP) of one feature level.

    The features ``[dist, ref, |dist - ref|]`` are weighted by a gate predicted
    from the distance, then average-pooled to ``size`` when the level is larger in
    both dimensions. The three parts are pooled separately and concatenated
    afterwards, which equals pooling the concatenation but never materialises the
    full-resolution 3C-channel tensor.

    Shape:
        - dist, ref: (N, C, h, w).
        - Returns: pooled (N, 3C, h', w') and the gate (N, 1, h, w) in (0, 1).
    """
    diff = feature_distance(dist, ref)
    gate = gate_net(diff)
    parts = [gated_pool(x, gate, size) for x in (dist, ref, diff)]
    return torch.cat(parts, dim=1), gate


def gated_pool(x: torch.Tensor, gate: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One part of :func:`gated_local_pool`: ``x * gate``, average-pooled to ``size``
    when ``x`` is larger in both dimensions.

    Shape: x (N, C, h, w), gate (N, 1, h, w) -> (N, C, h', w').
    """
    out = x * gate
    if x.shape[-2] > size[0] and x.shape[-1] > size[1]:
        out = F.adaptive_avg_pool2d(out, size)
    return out

