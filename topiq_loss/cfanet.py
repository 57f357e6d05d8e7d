"""CFANet-FR: the full-reference TOPIQ quality network."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from .backbone import FEATURE_CHANNELS, ResNet50Features
from .layers import CrossAttentionLayer, LayerStack, SelfAttentionLayer, gated_local_pool

__all__ = ["CFANetFR", "CFANetFeatures", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DIM = 256
_HEADS = 4
_HIDDEN = 1024
_EMB_GRID = 32


@dataclass
class CFANetFeatures:
    """Intermediate results of one CFANet-FR pass, for inspection (quality maps).

    Attributes:
        score: (N,) quality, higher is better.
        gates: per level (stem .. layer4), the GLP gate (N, 1, h_i, w_i) in (0, 1).
        cross_attention: per cross-scale step (from layer3 down to the stem), the
            attention each key location receives, (N, h', w'), averaged over heads
            and queries.
    """

    score: torch.Tensor
    gates: list[torch.Tensor]
    cross_attention: list[torch.Tensor]


def _gate_net(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, 64, 1),
        nn.GELU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(64, 1, 3, padding=1),
        nn.Sigmoid(),
    )


class CFANetFR(nn.Module):
    """Full-reference CFANet (TOPIQ-FR) with a ResNet50 backbone.

    Randomly initialised; load official weights with
    :func:`topiq_loss.load_weights` or ``load_state_dict(params, strict=True)``.
    Its state dict has exactly the keys of the official checkpoints, including the
    decoder layers' ``self_attn`` which the forward pass never uses.

    Pipeline: ImageNet normalisation -> ResNet50 features at 5 levels -> gated
    local pooling of ``[dist, ref, |dist - ref|]`` to the layer4 grid ->
    self-attention per level -> top-down cross-scale attention (layer4 queries
    layer3, ..., the stem) -> attention pooling -> mean over tokens -> MLP.

    Example:
        >>> net = CFANetFR().eval()
        >>> x = torch.rand(2, 3, 64, 64)
        >>> net(x, x).shape
        torch.Size([2])
    """

    def __init__(self) -> None:
        super().__init__()
        self.semantic_model = ResNet50Features()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        self.weight_pool = nn.ModuleList(_gate_net(c) for c in FEATURE_CHANNELS)
        self.dim_reduce = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3 * c, _DIM, 1), nn.GELU()) for c in FEATURE_CHANNELS
        )
        self.sa_attn_blks = nn.ModuleList(
            LayerStack([SelfAttentionLayer(_DIM, _HEADS, _HIDDEN)]) for _ in FEATURE_CHANNELS
        )
        self.attn_blks = nn.ModuleList(
            LayerStack([CrossAttentionLayer(_DIM, _HEADS, _HIDDEN)])
            for _ in FEATURE_CHANNELS[1:]
        )
        self.attn_pool = SelfAttentionLayer(_DIM, _HEADS, _HIDDEN)
        self.score_linear = nn.Sequential(
            nn.LayerNorm(_DIM),
            nn.Linear(_DIM, _DIM),
            nn.GELU(),
            nn.LayerNorm(_DIM),
            nn.Linear(_DIM, _DIM),
            nn.GELU(),
            nn.Linear(_DIM, 1),
        )
        # Learned position embeddings on a 32x32 grid, resized to the token grid.
        self.h_emb = nn.Parameter(torch.empty(1, _DIM // 2, _EMB_GRID, 1))
        self.w_emb = nn.Parameter(torch.empty(1, _DIM // 2, 1, _EMB_GRID))
        nn.init.trunc_normal_(self.h_emb, std=0.02)
        nn.init.trunc_normal_(self.w_emb, std=0.02)
        for m in self.dim_reduce.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def position_embedding(self, size: tuple[int, int]) -> torch.Tensor:
        """Position embedding for a token grid of ``size``, shape (1, h*w, 256), float32."""
        h, w = self.h_emb.shape[2], self.w_emb.shape[3]
        grid = torch.cat([self.h_emb.expand(-1, -1, h, w), self.w_emb.expand(-1, -1, h, w)], 1)
        with torch.autocast(grid.device.type, enabled=False):
            grid = F.interpolate(grid.float(), size=size, mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> ImageNet-normalised input of the backbone."""
        return (x - self.mean) / self.std

    def extract(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor,
        checkpoint: bool = False,
        amp_backbone: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone features of both images (5 levels each).

        Under autocast the backbone runs in float32 unless ``amp_backbone``: the
        gradient of ``sqrt((a - b)^2 + eps)`` is the sign of ``a - b``, and the
        rounding of half-precision features flips it wherever the two images'
        features are close (measured on CPU: input-gradient cosine to fp32 0.971 in
        bfloat16, 0.998 in float16, 0.99994 with a float32 backbone).
        """
        device = dist.device.type
        if not amp_backbone and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                dtype = self.mean.dtype  # the network's own precision, not a fixed float32
                return self.extract(dist.to(dtype), ref.to(dtype), checkpoint, amp_backbone=True)
        dist, ref = self.normalize(dist), self.normalize(ref)
        if torch.is_grad_enabled() and not ref.requires_grad:
            # The reference needs no graph: skip storing its activations.
            feats_d = self.semantic_model(dist, checkpoint=checkpoint)
            with torch.no_grad():
                feats_r = self.semantic_model(ref)
            return feats_d, feats_r
        # One backbone call on the stacked batch (BN is in eval, so samples are independent).
        feats = self.semantic_model(torch.cat([dist, ref]), checkpoint=checkpoint)
        n = dist.shape[0]
        return [f[:n] for f in feats], [f[n:] for f in feats]

    def forward_features(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor,
        checkpoint: bool = False,
        need_maps: bool = False,
        amp_backbone: bool = False,
    ) -> CFANetFeatures:
        """Score and (with ``need_maps``) the gate and cross-attention maps.

        Args:
            dist, ref: (N, 3, H, W) in [0, 1], H, W >= 32; no checks are made here.
            checkpoint: recompute backbone activations in backward.
            need_maps: also return cross-attention maps (costs one extra attention).
            amp_backbone: let an enclosing autocast run the backbone in half precision
                (faster; input gradients less exact, see :meth:`extract`).
        """
        feats_d, feats_r = self.extract(dist, ref, checkpoint, amp_backbone)
        size = tuple(feats_d[-1].shape[-2:])
        pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        tokens, gates = [], []
        # With checkpointing, GLP's full-resolution gate activations are recomputed
        # in backward too: they hold about as much memory as the backbone's.
        use_cp = checkpoint and (feats_d[0].requires_grad or feats_r[0].requires_grad)
        for i in reversed(range(len(feats_d))):
            args = (feats_d[i], feats_r[i], self.weight_pool[i], size)
            if use_cp:
                pooled, gate = cp.checkpoint(gated_local_pool, *args, use_reentrant=False)
            else:
                pooled, gate = gated_local_pool(*args)
            gates.append(gate)
            grid = tuple(pooled.shape[-2:])
            if grid not in pos_cache:
                pos_cache[grid] = self.position_embedding(grid)
            x = self.dim_reduce[i](pooled).flatten(2).transpose(1, 2)
            x = x + pos_cache[grid].to(x.dtype)
            tokens.append(self.sa_attn_blks[i](x))

        cross = []
        query = tokens[0]
        for blk, memory in zip(self.attn_blks, tokens[1:], strict=True):
            if need_maps:
                cross.append(_attention_received(blk.layers[0], query, memory, size))
            query = blk(query, memory)
        x = self.attn_pool(query).mean(dim=1)
        with torch.autocast(x.device.type, enabled=False):
            head_dtype = self.score_linear[1].weight.dtype
            score = self.score_linear(x.to(head_dtype)).squeeze(-1)
        return CFANetFeatures(score=score, gates=gates[::-1], cross_attention=cross)

    def forward(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor,
        checkpoint: bool = False,
        amp_backbone: bool = False,
    ) -> torch.Tensor:
        """Quality of ``dist`` against ``ref``.

        Args:
            dist: (N, 3, H, W) distorted images, RGB in [0, 1], H, W >= 32.
            ref: (N, 3, H, W) reference images, same range.
            checkpoint: recompute backbone activations in backward (saves memory).
            amp_backbone: run the backbone under an enclosing autocast (see :meth:`extract`).

        Returns:
            (N,) quality scores, higher is better (about 0..1 for official weights).
        """
        return self.forward_features(dist, ref, checkpoint, amp_backbone=amp_backbone).score


def _attention_received(
    layer: CrossAttentionLayer, query: torch.Tensor, memory: torch.Tensor, size: tuple[int, ...]
) -> torch.Tensor:
    """Mean attention weight each memory location receives, as an (N, h, w) map."""
    attn = layer.multihead_attn
    dim = query.shape[-1]
    q = F.linear(layer.norm1(query), attn.in_proj_weight[:dim], attn.in_proj_bias[:dim])
    k = F.linear(layer.norm2(memory), attn.in_proj_weight[dim : 2 * dim], attn.in_proj_bias[dim : 2 * dim])
    q, k = attn._heads(q), attn._heads(k)
    weights = torch.softmax((q @ k.transpose(-1, -2)).float() / (q.shape[-1] ** 0.5), dim=-1)
    received = weights.mean(dim=(1, 2))
    return received.view(query.shape[0], *size)
