"""CFANet-NR: the no-reference TOPIQ network (the one-image front).

Same backbone, attention stack and head as CFANet-FR (:class:`~topiq_loss.models.trunk.CFANetTrunk`);
per level a gated convolution replaces the two-image gated pooling. One class serves
both official ResNet50 layouts: quality (KonIQ, SPAQ, FLIVE: ``dim=256, num_heads=4``,
one output) and aesthetics (AVA: ``dim=512, num_heads=8``, a 10-way distribution whose
expectation is the 1..10 score).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import FEATURE_CHANNELS
from .layers import gate_net
from .trunk import CFANetFeatures, CFANetTrunk, network_precision

__all__ = ["CFANetNR", "GatedConv"]


class GatedConv(nn.Module):
    """``GELU(a) * gate(b)`` where ``a, b`` are the halves of a 1x1 conv C -> 2C.

    The gate is a small conv net (C -> 64 -> 64 -> 1, sigmoid) on the second half.
    Names (``splitconv``, ``weight_blk``) follow the official checkpoints.

    Shape: (N, C, h, w) -> (N, C, h, w) and the gate (N, 1, h, w) in (0, 1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.splitconv = nn.Conv2d(channels, 2 * channels, 1)
        self.weight_blk = gate_net(channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.splitconv(x).chunk(2, dim=1)
        gate = self.weight_blk(b)
        return F.gelu(a) * gate, gate


def _gated_reduce(
    feat: torch.Tensor, gated: nn.Module, reduce: nn.Module, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    x, gate = gated(feat)
    if x.shape[-2] > size[0] and x.shape[-1] > size[1]:
        x = F.adaptive_avg_pool2d(x, size)
    return reduce(x), gate


class CFANetNR(CFANetTrunk):
    """No-reference CFANet (TOPIQ-NR / TOPIQ-IAA) with a ResNet50 backbone.

    Randomly initialised; official weights come through :class:`topiq_loss.TOPIQNRLoss`,
    or ``load_state_dict(params, strict=True)``. The state dict has exactly the
    official keys (``../shared/reference/cfanet_nr_state_dict_keys.txt`` for the
    quality layout, ``cfanet_iaa_res50_state_dict_keys.txt`` for aesthetics).

    Args:
        dim: token width, 256 (quality) or 512 (aesthetics).
        num_heads: 4 (quality) or 8 (aesthetics).
        num_class: 1 (quality score) or 10 (aesthetics distribution over 1..10).

    Example:
        >>> net = CFANetNR().eval()
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2])
    """

    def __init__(self, dim: int = 256, num_heads: int = 4, num_class: int = 1) -> None:
        super().__init__(FEATURE_CHANNELS, dim=dim, num_heads=num_heads, num_class=num_class)
        self.weight_pool = nn.ModuleList(GatedConv(c) for c in FEATURE_CHANNELS)

    @classmethod
    def aesthetics(cls) -> CFANetNR:
        """The AVA aesthetics layout (``dim=512, num_heads=8, num_class=10``)."""
        return cls(dim=512, num_heads=8, num_class=10)

    @network_precision
    def head(self, feats: list[torch.Tensor], need_maps: bool = False) -> CFANetFeatures:
        """Everything after the backbone, from its 5 levels (see :meth:`backbone_features`)."""
        reduced, gates = self.pool_levels(_gated_reduce, [(f,) for f in feats])
        return self.attend(reduced, gates, need_maps)

    def forward_features(self, img: torch.Tensor, need_maps: bool = False) -> CFANetFeatures:
        """Score and (with ``need_maps``) gates and cross-attention maps; no checks, no resize."""
        return self.head(self.backbone_features(img), need_maps)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Quality (or expected aesthetics score) of ``img``.

        Args:
            img: (N, 3, H, W) RGB in [0, 1], H, W >= 32, already at the size the
                weights expect (see :func:`topiq_loss.topiq_nr` for the resize).

        Returns:
            (N,) scores, higher is better.
        """
        return self.forward_features(img).score
