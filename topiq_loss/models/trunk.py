"""The part of CFANet shared by its full-reference and no-reference forms.

``CFANetTrunk`` owns the backbone (ResNet50 by default, or any feature extractor
given to it, such as :class:`~topiq_loss.models.swin.SwinFeatures`), the per-level channel reduction, the
self-attention per level, the top-down cross-scale attention, the attention
pooling and the score MLP, under the official checkpoints' attribute names. A
*front* (``CFANetFR``'s two-image gated local pooling, ``CFANetNR``'s one-image
gated convolution) turns backbone features into one map per level.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from .. import _checks
from .backbone import ResNet50Features
from .layers import CrossAttentionLayer, LayerStack, SelfAttentionLayer

__all__ = [
    "CFANetTrunk", "CFANetFeatures", "IMAGENET_MEAN", "IMAGENET_STD", "CPU_CHUNK_BYTES", "front_chunk", "map_levels",
    "network_precision",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EMB_GRID = 32

#: On CPU, the full-resolution front runs on batch chunks of at most this many bytes per
#: feature tensor. Larger temporaries are mmap'd and page-faulted afresh by the C
#: allocator at every call (measured: a 2x64x256x256 product took 8.4 ms, two 1x ones
#: 0.5 ms); chunking halved the whole FR step at 4x3x512x512 (4.5 s -> 2.2 s). 1 MiB
#: (one sample per chunk for levels of >= 512 x 16 x 16 floats) also makes the anchor's
#: constant gate, computed once per chunk size, cost one sample's gate instead of the
#: batch's; the score step was as fast at 1, 4 and 16 MiB (docs/performance.md).
CPU_CHUNK_BYTES = 2**20

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _cast_floats(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_cast_floats(v, dtype) for v in x)
    return x


def network_precision(method: _Method) -> _Method:
    """Run a head entry (``head``, ``anchor_head``: everything after the backbone) in the
    network's own dtype under ``torch.autocast``: autocast off, float tensor arguments
    (features, lists of them) cast to the network's dtype. Unless the network follows
    autocast (:meth:`CFANetTrunk.set_autocast`); outside autocast nothing changes.

    Half precision in the head (LayerNorms, attention, GELUs on 8-bit mantissas in
    bfloat16) moved the input gradient beyond the accuracy contract (measured on CPU:
    geometric-mean error 1.0e-2 to 1.3e-2 in bfloat16 against 5e-3); the backbone's own
    rule is in :meth:`CFANetTrunk.backbone_features`.
    """

    @functools.wraps(method)
    def run(self: CFANetTrunk, *args: Any, **kwargs: Any) -> Any:
        device = self.h_emb.device.type
        # getattr: a network pickled before the setting existed has no attribute for it.
        if getattr(self, "head_autocast", False) or not torch.is_autocast_enabled(device):
            return method(self, *args, **kwargs)
        dtype = self.h_emb.dtype
        with torch.autocast(device, enabled=False):
            return method(self, *_cast_floats(args, dtype), **{k: _cast_floats(v, dtype) for k, v in kwargs.items()})

    return cast(_Method, run)


@dataclass
class CFANetFeatures:
    """Intermediate results of one CFANet pass, for inspection (quality maps).

    Attributes:
        score: (N,) quality (or the expected 1..10 score of an aesthetics head).
        gates: per level (stem .. layer4 for ResNet50), the front's gate (N, 1, h_i, w_i) in (0, 1).
        cross_attention: per cross-scale step (from layer3 down to the stem), the
            attention each key location receives, (N, h', w'), averaged over heads
            and queries.
    """

    score: torch.Tensor
    gates: list[torch.Tensor]
    cross_attention: list[torch.Tensor]


class CFANetTrunk(nn.Module):
    """Backbone, attention stack and head of CFANet; subclasses add the front.

    Args:
        reduce_channels: input channels of each level's 1x1 reduction (the front's
            output channels), one per backbone level (stem .. layer4 for ResNet50).
        dim: token width (256 for quality, 512 for the aesthetics model).
        num_heads: attention heads (4 / 8).
        num_class: outputs of the MLP; above 1 they are a softmax distribution over
            the scores 1..num_class and the score is its expectation.
        backbone: the feature extractor, held as ``semantic_model`` (default a new
            :class:`~topiq_loss.models.backbone.ResNet50Features`). It takes an
            ImageNet-normalised batch and returns one map per level; its
            ``input_size`` (None, or (H, W) every image is resized to first,
            antialiased) and ``set_grad_checkpointing`` are read by the trunk.
    """

    mean: torch.Tensor
    std: torch.Tensor
    #: One front module per level, set by the subclass (``CFANetFR``, ``CFANetNR``).
    weight_pool: nn.ModuleList

    def __init__(
        self,
        reduce_channels: Sequence[int],
        dim: int = 256,
        num_heads: int = 4,
        num_class: int = 1,
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__()
        hidden = min(4 * dim, 2048)
        self.num_class = num_class
        self.semantic_model = backbone if backbone is not None else ResNet50Features()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.dim_reduce = nn.ModuleList(nn.Sequential(nn.Conv2d(c, dim, 1), nn.GELU()) for c in reduce_channels)
        self.sa_attn_blks = nn.ModuleList(
            LayerStack([SelfAttentionLayer(dim, num_heads, hidden)]) for _ in reduce_channels
        )
        self.attn_blks = nn.ModuleList(
            LayerStack([CrossAttentionLayer(dim, num_heads, hidden)]) for _ in reduce_channels[1:]
        )
        self.attn_pool = SelfAttentionLayer(dim, num_heads, hidden)
        self.score_linear = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim),
            nn.GELU(),
            nn.LayerNorm(dim),
            nn.Linear(dim, dim),
            nn.GELU(),
            nn.Linear(dim, num_class),
        )
        # Learned position embeddings on a 32x32 grid, resized to the token grid.
        self.h_emb = nn.Parameter(torch.empty(1, dim // 2, _EMB_GRID, 1))
        self.w_emb = nn.Parameter(torch.empty(1, dim // 2, 1, _EMB_GRID))
        nn.init.trunc_normal_(self.h_emb, std=0.02)
        nn.init.trunc_normal_(self.w_emb, std=0.02)
        for m in self.dim_reduce.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
        # Settings (timm style): read at each call, never in state_dict(). Checkpointing
        # is held once, by the backbone (see the grad_checkpointing property).
        self.backbone_autocast = False
        self.head_autocast = False

    @property
    def grad_checkpointing(self) -> bool:
        """Whether the backbone and the fronts recompute activations in backward."""
        return bool(self.semantic_model.grad_checkpointing)

    def set_grad_checkpointing(self, enable: bool = True) -> CFANetTrunk:
        """Recompute the backbone's stages and each level's gated pooling in backward
        instead of storing their activations (less memory, about one extra forward of
        the network in backward; same values and gradients). Returns ``self``."""
        cast(Any, self.semantic_model).set_grad_checkpointing(_checks.check_bool(enable, "enable"))
        return self

    def set_backbone_autocast(self, enable: bool = True) -> CFANetTrunk:
        """Under ``torch.autocast``, let the backbone run in half precision too
        (default off: it stays in the network's dtype; see :meth:`backbone_features`).
        Returns ``self``."""
        self.backbone_autocast = _checks.check_bool(enable, "enable")
        return self

    def set_autocast(self, enable: bool = True) -> CFANetTrunk:
        """Opt in to half precision: under ``torch.autocast`` the whole network (backbone
        and head) follows it. Default off: the network runs in its own dtype whatever
        autocast says (the loss is then float32 under AMP, as traiNNer-redux runs its
        losses). What it costs: the input gradient misses the accuracy contract
        (geometric-mean relative error against float64, CPU: 1.0e-2 to 1.3e-2 in
        bfloat16, 1.6e-3 with a float32 backbone in float16; the contract is 5e-3) and
        ``loss(x, x) == 0`` stays exact. Returns ``self``."""
        self.backbone_autocast = self.head_autocast = _checks.check_bool(enable, "enable")
        return self

    def position_embedding(self, size: tuple[int, int]) -> torch.Tensor:
        """Position embedding for a token grid of ``size``, (1, h*w, dim), at least float32."""
        h, w = self.h_emb.shape[2], self.w_emb.shape[3]
        grid = torch.cat([self.h_emb.expand(-1, -1, h, w), self.w_emb.expand(-1, -1, h, w)], 1)
        with torch.autocast(grid.device.type, enabled=False):
            wide = grid.to(torch.promote_types(grid.dtype, torch.float32))
            grid = F.interpolate(wide, size=size, mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> ImageNet-normalised input of the backbone, resized first to the
        backbone's fixed ``input_size`` where it has one (antialiased bilinear, as the
        reference's ``resize(x, [384, 384], antialias=True)``; skipped at that size)."""
        size = getattr(self.semantic_model, "input_size", None)
        if size is not None and (x.shape[-2], x.shape[-1]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def backbone_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features (one map per level, 5 for ResNet50) of images ``x``
        (N, 3, H, W) in [0, 1].

        Under autocast the backbone runs in the network's own dtype unless
        :meth:`set_backbone_autocast` is on: the gradient of the FR distance ``sqrt((a - b)^2 + eps)`` is
        the sign of ``a - b``, and the rounding of half-precision features flips it
        wherever the two images' features are close (measured on CPU: input-gradient
        cosine to fp32 0.971 in bfloat16, 0.998 in float16, 0.99994 with a float32
        backbone).
        """
        device = x.device.type
        if not self.backbone_autocast and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return cast(list[torch.Tensor], self.semantic_model(self.normalize(x.to(self.mean.dtype))))
        return cast(list[torch.Tensor], self.semantic_model(self.normalize(x)))

    def pool_levels(
        self,
        fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
        levels: Sequence[Sequence[torch.Tensor]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The front of every level: ``fn(*images, weight_pool[i], dim_reduce[i], size)``
        on ``levels[i]`` (stem .. layer4), the layer4 grid as ``size``; see
        :func:`map_levels`. Returns the reduced maps and the gates."""
        size = (levels[-1][0].shape[-2], levels[-1][0].shape[-1])
        use_cp = self.front_checkpointing(levels[0])
        reduced, gates = [], []
        for i, images in enumerate(levels):
            modules = (self.weight_pool[i], self.dim_reduce[i])
            r, g = map_levels(fn, images, modules, size, use_cp)
            reduced.append(r)
            gates.append(g)
        return reduced, gates

    def front_checkpointing(self, images: Sequence[torch.Tensor]) -> bool:
        """Whether the fronts of a pass on ``images`` (one level's) run checkpointed."""
        # With checkpointing the fronts' full-resolution gate activations are recomputed
        # in backward too: they hold about as much memory as the backbone's.
        return self.grad_checkpointing and torch.is_grad_enabled() and any(x.requires_grad for x in images)

    def attend(
        self, reduced: list[torch.Tensor], gates: list[torch.Tensor], need_maps: bool = False
    ) -> CFANetFeatures:
        """From one reduced map per level (stem .. layer4, (N, dim, h, w)) to the score."""
        size = (reduced[-1].shape[-2], reduced[-1].shape[-1])
        # Every level is pooled to the layer4 grid, so one embedding serves all of them.
        # (No dict keyed by grid sizes: under torch.compile that specialises on them.)
        pos = self.position_embedding(size)
        tokens = []
        for i in reversed(range(len(reduced))):
            grid = (reduced[i].shape[-2], reduced[i].shape[-1])
            level_pos = pos if grid == size else self.position_embedding(grid)
            x = reduced[i].flatten(2).transpose(1, 2)
            tokens.append(self.sa_attn_blks[i](x + level_pos.to(x.dtype)))
        cross = []
        query = tokens[0]
        for blk, memory in zip(self.attn_blks, tokens[1:], strict=True):
            if need_maps:
                cross.append(_attention_received(cast(CrossAttentionLayer, cast(LayerStack, blk).layers[0]), query, memory, size))
            query = blk(query, memory)
        x = self.attn_pool(query).mean(dim=1)
        with torch.autocast(x.device.type, enabled=False):
            out = self.score_linear(x.to(self.h_emb.dtype))
            if self.num_class == 1:
                score = out.squeeze(-1)
            else:
                values = torch.arange(1, self.num_class + 1, dtype=out.dtype, device=out.device)
                score = (out.softmax(dim=-1) * values).sum(dim=-1)
        return CFANetFeatures(score=score, gates=gates, cross_attention=cross)


def map_levels(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    images: Sequence[torch.Tensor],
    modules: Sequence[nn.Module],
    size: tuple[int, int],
    use_cp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(*images, *modules, size) -> (reduced, gate)`` for one level, checkpointed as one
    unit (neither full-resolution temporaries nor the pooled map are kept) and, on CPU,
    run in batch chunks (see :data:`CPU_CHUNK_BYTES`)."""
    chunk = front_chunk(images[0])
    outs = []
    for parts in zip(*(x.split(chunk) for x in images), strict=True):  # type: ignore[no-untyped-call]
        if use_cp:
            outs.append(cp.checkpoint(fn, *parts, *modules, size, use_reentrant=False))
        else:
            outs.append(fn(*parts, *modules, size))
    if len(outs) == 1:
        return outs[0]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def front_chunk(features: torch.Tensor) -> int:
    """Batch size of the chunks :func:`map_levels` runs one level's front on.

    The one rule for every pass: the anchor (:meth:`CFANetFR.anchor_head`) computes its
    constant gate at these sizes so that its arithmetic is the score pass's."""
    n = features.shape[0]
    per_sample = features[0].numel() * features.element_size()
    if features.device.type == "cpu" and not torch.compiler.is_compiling() and n * per_sample > CPU_CHUNK_BYTES:
        return max(1, CPU_CHUNK_BYTES // per_sample)
    return n


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
