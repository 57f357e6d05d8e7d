"""Frozen loss modules: a hidden network held by :class:`~.holder.FrozenHolder`,
TOPIQ FR and NR, LPIPS and LPIPS+.
"""

from __future__ import annotations

from .fr import TOPIQLoss, TOPIQTarget
from .lpips import LPIPSLoss, LPIPSPlusLoss
from .nr import TOPIQNRLoss

__all__ = [
    "LPIPSLoss",
    "LPIPSPlusLoss",
    "TOPIQLoss",
    "TOPIQNRLoss",
    "TOPIQTarget",
]
