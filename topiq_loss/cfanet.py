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
        """Position embedding for a token grid of ``size``, (1, h*w, 256), at least float32."""
        h, w = self.h_emb.shape[2], self.w_emb.shape[3]
        grid = torch.cat([self.h_emb.expand(-1, -1, h, w), self.w_emb.expand(-1, -1, h, w)], 1)
        with torch.autocast(grid.device.type, enabled=False):
            grid = F.interpolate(
                grid.to(torch.promote_types(grid.dtype, torch.float32)), size=size, mode="bicubic", align_corners=False
            )
        return grid.flatten(2).transpose(1, 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> ImageNet-normalised input of the backbone."""
        return (x - self.mean) / self.std

    def backbone_features(
        self, x: torch.Tensor, checkpoint: bool = False, amp_backbone: bool = False
    ) -> list[torch.Tensor]:
        """Backbone features (5 levels) of images ``x`` (N, 3, H, W) in [0, 1].

        Under autocast the backbone runs in the network's own dtype unless
        ``amp_backbone``: the gradient of ``sqrt((a - b)^2 + eps)`` is the sign of
        ``a - b``, and the rounding of half-precision features flips it wherever the
        two images' features are close (measured on CPU: input-gradient cosine to
        fp32 0.971 in bfloat16, 0.998 in float16, 0.99994 with a float32 backbone).
        """
        device = x.device.type
        if not amp_backbone and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return self.semantic_model(self.normalize(x.to(self.mean.dtype)), checkpoint=checkpoint)
        return self.semantic_model(self.normalize(x), checkpoint=checkpoint)

    def extract(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor,
        checkpoint: bool = False,
        amp_backbone: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone features of both images (5 levels each); see :meth:`backbone_features`."""
        if torch.is_grad_enabled() and not ref.requires_grad:
            # The reference needs no graph: skip storing its activations.
            feats_d = self.backbone_features(dist, checkpoint, amp_backbone)
            with torch.no_grad():
                feats_r = self.backbone_features(ref, False, amp_backbone)
            return feats_d, feats_r
        # One backbone call on the stacked batch (BN is in eval, so samples are independent).
        feats = self.backbone_features(torch.cat([dist, ref]), checkpoint, amp_backbone)
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
                (faster; input gradients less exact, see :meth:`backbone_features`).
        """
        feats_d, feats_r = self.extract(dist, ref, checkpoint, amp_backbone)
        return self.head(feats_d, feats_r, checkpoint, need_maps)

    def head(
        self,
        feats_d: list[torch.Tensor],
        feats_r: list[torch.Tensor],
        checkpoint: bool = False,
        need_maps: bool = False,
    ) -> CFANetFeatures:
        """Everything after the backbone: gated pooling, attention, score.

        Args:
            feats_d, feats_r: the 5 backbone levels of the distorted and reference
                images (from :meth:`backbone_features`); ``feats_r`` may have batch 1
                and is then broadcast.
        """
        if feats_r[0].shape[0] != feats_d[0].shape[0]:
            feats_r = [f.expand(feats_d[0].shape[0], -1, -1, -1) for f in feats_r]
        size = (feats_d[-1].shape[-2], feats_d[-1].shape[-1])
        # Every level is pooled to the layer4 grid, so one embedding serves all of them.
        # (No dict keyed by grid sizes: under torch.compile that specialises on them.)
        pos = self.position_embedding(size)
        tokens, gates = [], []
        # With checkpointing, GLP's full-resolution gate activations are recomputed
        # in backward too: they hold about as much memory as the backbone's.
        use_cp = checkpoint and (feats_d[0].requires_grad or feats_r[0].requires_grad)
        for i in reversed(range(len(feats_d))):
            reduced, gate = _pool_level(
                feats_d[i], feats_r[i], self.weight_pool[i], self.dim_reduce[i], size, use_cp
            )
            gates.append(gate)
            grid = (reduced.shape[-2], reduced.shape[-1])
            level_pos = pos if grid == size else self.position_embedding(grid)
            x = reduced.flatten(2).transpose(1, 2)
            x = x + level_pos.to(x.dtype)
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
            amp_backbone: run the backbone under an enclosing autocast (see :meth:`backbone_features`).

        Returns:
            (N,) quality scores, higher is better (about 0..1 for official weights).
        """
        return self.forward_features(dist, ref, checkpoint, amp_backbone=amp_backbone).score


#: On CPU, GLP runs on batch chunks of at most this many bytes per feature tensor.
#: Larger temporaries are mmap'd and page-faulted afresh by the C allocator at every
#: call (measured: a 2x64x256x256 product took 8.4 ms, a 1x one 0.25 ms per element
#: count); chunking halved the whole step at 4x3x512x512 (4.5 s -> 2.2 s).
CPU_CHUNK_BYTES = 16 * 2**20


def _glp_reduce(
    dist: torch.Tensor, ref: torch.Tensor, gate_net: nn.Module, reduce: nn.Module, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    pooled, gate = gated_local_pool(dist, ref, gate_net, size)
    return reduce(pooled), gate


def _pool_level(
    dist: torch.Tensor,
    ref: torch.Tensor,
    gate_net: nn.Module,
    reduce: nn.Module,
    size: tuple[int, int],
    use_cp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLP and the channel reduction of one level: (N, 256, h', w') and the gate.

    Checkpointed as one unit (neither the full-resolution products nor the 3C-channel
    pooled map are kept), and on CPU run in batch chunks (see :data:`CPU_CHUNK_BYTES`).
    """
    n = dist.shape[0]
    per_sample = dist[0].numel() * dist.element_size()
    chunk = n
    if dist.device.type == "cpu" and not torch.compiler.is_compiling() and n * per_sample > CPU_CHUNK_BYTES:
        chunk = max(1, CPU_CHUNK_BYTES // per_sample)
    outs = []
    for d, r in zip(dist.split(chunk), ref.split(chunk), strict=True):
        if use_cp:
            outs.append(cp.checkpoint(_glp_reduce, d, r, gate_net, reduce, size, use_reentrant=False))
        else:
            outs.append(_glp_reduce(d, r, gate_net, reduce, size))
    if len(outs) == 1:
        return outs[0]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


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
