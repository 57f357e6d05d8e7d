"""CFANet-NR: the no-reference TOPIQ network (the one-image front).

Same attention stack and head as CFANet-FR (:class:`~topiq_loss.models.trunk.CFANetTrunk`);
per level a gated convolution replaces the two-image gated pooling. One class serves
every official NR layout, by its backbone and sizes: ResNet50 quality (KonIQ, SPAQ,
FLIVE, the face models: ``dim=256, num_heads=4``, one output) and aesthetics (AVA:
``dim=512, num_heads=8``, a 10-way distribution whose expectation is the 1..10 score),
and the same two with a Swin-B backbone (:meth:`CFANetNR.swin`,
:meth:`CFANetNR.swin_aesthetics`), which resizes every image to 384x384 itself.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import ResNet50Features
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
        backbone: the feature extractor (default a new ResNet50
            :class:`~topiq_loss.models.backbone.ResNet50Features`; see
            :class:`~topiq_loss.models.trunk.CFANetTrunk`); one gated convolution per
            level of its ``channels``.

    Example:
        >>> net = CFANetNR().eval()
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2])
    """

    def __init__(
        self, dim: int = 256, num_heads: int = 4, num_class: int = 1, backbone: nn.Module | None = None
    ) -> None:
        # Built before the trunk's own layers, as the trunk would: random weights draw
        # in the same order whichever builds it.
        backbone = backbone if backbone is not None else ResNet50Features()
        channels: tuple[int, ...] = tuple(backbone.channels)  # type: ignore[arg-type]
        super().__init__(channels, dim=dim, num_heads=num_heads, num_class=num_class, backbone=backbone)
        self.weight_pool = nn.ModuleList(GatedConv(c) for c in channels)

    @classmethod
    def aesthetics(cls) -> CFANetNR:
        """The AVA aesthetics layout (``dim=512, num_heads=8, num_class=10``)."""
        return cls(dim=512, num_heads=8, num_class=10)

    @classmethod
    def swin(cls, dim: int = 256, num_heads: int = 4, num_class: int = 1) -> CFANetNR:
        """The Swin-B quality layout (the face model ``topiq_nr_gfiqa_swin``): a
        :class:`~topiq_loss.models.swin.SwinFeatures` backbone, 4 levels; every image
        is resized to 384x384 (antialiased) inside the network."""
        from .swin import SwinFeatures

        return cls(dim=dim, num_heads=num_heads, num_class=num_class, backbone=SwinFeatures())

    @classmethod
    def swin_aesthetics(cls) -> CFANetNR:
        """The Swin-B AVA aesthetics layout (``cfanet_iaa_ava_swin``; ``dim=512,
        num_heads=8, num_class=10``)."""
        return cls.swin(dim=512, num_heads=8, num_class=10)

    @network_precision
    def head(self, feats: list[torch.Tensor], need_maps: bool = False) -> CFANetFeatures:
        """Everything after the backbone, from its levels (see :meth:`backbone_features`)."""
        reduced, gates = self.pool_levels(_gated_reduce, [(f,) for f in feats])
        return self.attend(reduced, gates, need_maps)

    def forward_features(self, img: torch.Tensor, need_maps: bool = False) -> CFANetFeatures:
        """Score and (with ``need_maps``) gates and cross-attention maps; no checks, no resize."""
        return self.head(self.backbone_features(img), need_maps)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Quality (or expected aesthetics score) of ``img``.

        Args:
            img: (N, 3, H, W) RGB in [0, 1], H, W >= 32, already at the size the
                weights expect (see :func:`topiq_loss.topiq_nr` for the resize; a Swin
                backbone resizes to its 384x384 itself).

        Returns:
            (N,) scores, higher is better.
        """
        return self.forward_features(img).score
