"""torchmetrics metrics over the frozen TOPIQ networks (the ``metrics`` extra).
"""

from __future__ import annotations

from .topiq import TOPIQMetric, TOPIQNRMetric

__all__ = [
    "TOPIQMetric",
    "TOPIQNRMetric",
]
