"""The networks, with no I/O: ResNet50 features, the CFANet trunk and its FR and NR
fronts, the LPIPS network. Weights are loaded by :mod:`topiq_loss.weights`.
"""

from __future__ import annotations

from .backbone import ResNet50Features
from .cfanet_fr import CFANetFR
from .cfanet_nr import CFANetNR
from .lpips import LPIPSNetwork
from .trunk import CFANetFeatures, CFANetTrunk

__all__ = [
    "CFANetFR",
    "CFANetFeatures",
    "CFANetNR",
    "CFANetTrunk",
    "LPIPSNetwork",
    "ResNet50Features",
]
