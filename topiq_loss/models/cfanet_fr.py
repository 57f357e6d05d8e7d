"""CFANet-FR: the full-reference TOPIQ quality network (the two-image front)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .backbone import FEATURE_CHANNELS
from .layers import gate_net, gated_local_pool
from .trunk import IMAGENET_MEAN, IMAGENET_STD, CFANetFeatures, CFANetTrunk

__all__ = ["CFANetFR", "CFANetFeatures", "IMAGENET_MEAN", "IMAGENET_STD"]


def _glp_reduce(
    dist: torch.Tensor,
    ref: torch.Tensor,
    gate_net: nn.Module,
    reduce: nn.Module,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    pooled, gate = gated_local_pool(dist, ref, gate_net, size)
    return reduce(pooled), gate


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

    def score_and_anchor(
        self,
        dist: torch.Tensor,
        ref: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score(dist, ref), score(ref, ref))``; the second has a graph only when ``ref``
        requires grad.

        The anchor reuses the reference's backbone features (no third backbone pass).
        Both images run the backbone separately with the same batch size and the same
        head, so where ``dist`` equals ``ref`` the two scores are computed by the same
        arithmetic and agree exactly.

        Returns:
            two (N,) tensors.
        """
        feats_d = self.backbone_features(dist)
        # A reference that requires grad gets the true gradient, the anchor's included;
        # otherwise the anchor is a constant and costs no graph.
        with torch.set_grad_enabled(torch.is_grad_enabled() and ref.requires_grad):
            feats_r = self.backbone_features(ref)
            anchor = self.head(feats_r, feats_r).score
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
