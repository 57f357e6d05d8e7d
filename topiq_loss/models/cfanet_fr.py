"""CFANet-FR: the full-reference TOPIQ quality network (the two-image front)."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn

from .backbone import FEATURE_CHANNELS
from .layers import feature_distance, gate_net, gated_pool
from .trunk import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CFANetFeatures,
    CFANetTrunk,
    front_chunk,
    map_levels,
    network_precision,
)

__all__ = ["CFANetFR", "CFANetFeatures", "IMAGENET_MEAN", "IMAGENET_STD"]


def _gate_and_distance(
    dist: torch.Tensor, ref: torch.Tensor, gate_net: nn.Module, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate of ``[dist, ref]`` and their pooled gated distance: the calls the score
    pass and the anchor both make (the anchor on ``(t, t)``, once per chunk size)."""
    diff = feature_distance(dist, ref)
    gate = gate_net(diff)
    return gate, gated_pool(diff, gate, size)


def _reduce_parts(
    pooled_dist: torch.Tensor, pooled_ref: torch.Tensor, pooled_diff: torch.Tensor, reduce: nn.Module
) -> torch.Tensor:
    """The 1x1 reduction of the three pooled parts, both passes' one call."""
    return cast(torch.Tensor, reduce(torch.cat([pooled_dist, pooled_ref, pooled_diff], dim=1)))


def _glp_reduce(
    dist: torch.Tensor,
    ref: torch.Tensor,
    gate_net: nn.Module,
    reduce: nn.Module,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    # Gated local pooling of [dist, ref, |dist - ref|], the three parts pooled apart (the
    # full-resolution 3C-channel map is never built), then reduced.
    gate, pooled_diff = _gate_and_distance(dist, ref, gate_net, size)
    pooled = _reduce_parts(gated_pool(dist, gate, size), gated_pool(ref, gate, size), pooled_diff, reduce)
    return pooled, gate


class CFANetFR(CFANetTrunk):
    """Full-reference CFANet (TOPIQ-FR) with a ResNet50 backbone.

    Randomly initialised; official weights come through :class:`topiq_loss.TOPIQLoss`
    / :func:`topiq_loss.build_network`, or ``load_state_dict(params, strict=True)``.
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
        super().__init__([3 * c for c in FEATURE_CHANNELS])
        self.weight_pool = nn.ModuleList(gate_net(c) for c in FEATURE_CHANNELS)

    def extract(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone features of both images (5 levels each); see :meth:`backbone_features`."""
        if torch.is_grad_enabled() and not ref.requires_grad:
            # The reference needs no graph: skip storing its activations.
            feats_d = self.backbone_features(dist)
            with torch.no_grad():
                feats_r = self.backbone_features(ref)
            return feats_d, feats_r
        # One backbone call on the stacked batch (BN is in eval, so samples are independent).
        feats = self.backbone_features(torch.cat([dist, ref]))
        n = dist.shape[0]
        return [f[:n] for f in feats], [f[n:] for f in feats]

    def forward_features(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor,
        need_maps: bool = False,
    ) -> CFANetFeatures:
        """Score and (with ``need_maps``) the gate and cross-attention maps.

        Args:
            dist: (N, 3, H, W) in [0, 1], H, W >= 32; no checks are made here.
            ref: the reference images, same shape.
            need_maps: also return cross-attention maps (costs one extra attention).
        """
        feats_d, feats_r = self.extract(dist, ref)
        return self.head(feats_d, feats_r, need_maps)

    @network_precision
    def head(
        self,
        feats_d: list[torch.Tensor],
        feats_r: list[torch.Tensor],
        need_maps: bool = False,
    ) -> CFANetFeatures:
        """Everything after the backbone: gated pooling, attention, score.

        Args:
            feats_d: the 5 backbone levels of the distorted images (from
                :meth:`backbone_features`).
            feats_r: those of the reference images; batch 1 is broadcast.
            need_maps: also return the cross-attention maps.
        """
        if feats_r[0].shape[0] != feats_d[0].shape[0]:
            feats_r = [f.expand(feats_d[0].shape[0], -1, -1, -1) for f in feats_r]
        reduced, gates = self.pool_levels(_glp_reduce, list(zip(feats_d, feats_r, strict=True)))
        return self.attend(reduced, gates, need_maps)

    @network_precision
    def anchor_head(self, feats: list[torch.Tensor], need_maps: bool = False) -> CFANetFeatures:
        """``head(feats, feats)``, the images scored against themselves, bit for bit, cheaper.

        Equal by construction: the anchor runs the score pass's own functions
        (``_gate_and_distance``, :func:`~topiq_loss.models.layers.gated_pool`,
        ``_reduce_parts``) on ``(t, t)``, views of the same features with the score
        pass's strides, so every tensor has the score pass's values, shapes and memory
        layout (a constant map built otherwise had other strides where the grid is 1x1,
        and a 1x1 convolution then rounds differently). It only skips repeats: the
        distance of ``(t, t)`` is one constant, so the gate and the pooled distance are
        computed once per chunk size of the CPU batch chunking
        (:func:`~topiq_loss.models.trunk.front_chunk`, the score pass's rule), and the
        two equal gated parts ``t * gate`` are pooled once.
        """
        size = (feats[-1].shape[-2], feats[-1].shape[-1])
        use_cp = self.front_checkpointing(feats)
        reduced, gates = [], []
        for i, t in enumerate(feats):
            gate_module = self.weight_pool[i]
            n, chunk = t.shape[0], front_chunk(t)
            constant = {
                b: _gate_and_distance(t[:b].detach(), t[:b].detach(), gate_module, size)
                for b in {chunk, n % chunk or chunk}
            }

            def level(
                part: torch.Tensor, reduce: nn.Module, size: tuple[int, int],
                constant: dict[int, tuple[torch.Tensor, torch.Tensor]] = constant,
            ) -> tuple[torch.Tensor, torch.Tensor]:
                gate, pooled_diff = constant[part.shape[0]]
                pooled = gated_pool(part, gate, size)
                return _reduce_parts(pooled, pooled, pooled_diff, reduce), gate

            r, g = map_levels(level, (t,), (self.dim_reduce[i],), size, use_cp)
            reduced.append(r)
            gates.append(g)
        return self.attend(reduced, gates, need_maps)

    def score_and_anchor(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score(dist, ref), score(ref, ref))``; the second has a graph only when ``ref``
        requires grad.

        The anchor reuses the reference's backbone features (no third backbone pass) and
        takes :meth:`anchor_head`'s shortcut. Both images run the backbone separately with
        the same batch size, and the shortcut makes the score pass's calls on the same
        values, so where ``dist`` equals ``ref`` the two scores agree exactly.

        Returns:
            two (N,) tensors.
        """
        feats_d = self.backbone_features(dist)
        # A reference that requires grad gets the true gradient, the anchor's included;
        # otherwise the anchor is a constant and costs no graph.
        with torch.set_grad_enabled(torch.is_grad_enabled() and ref.requires_grad):
            feats_r = self.backbone_features(ref)
            anchor = self.anchor_head(feats_r).score
        score = self.head(feats_d, feats_r).score
        return score, anchor

    def forward(self, dist: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Quality of ``dist`` against ``ref``.

        Args:
            dist: (N, 3, H, W) distorted images, RGB in [0, 1], H, W >= 32.
            ref: (N, 3, H, W) reference images, same range.

        Returns:
            (N,) quality scores, higher is better (about 0..1 for official weights).
        """
        return self.forward_features(dist, ref).score
