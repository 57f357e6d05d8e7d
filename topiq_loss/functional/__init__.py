"""Stateless maths on a given network: TOPIQ FR and NR scores and losses, the objectives,
the robust ensemble, quality maps. Nothing here builds or loads a network.
"""

from __future__ import annotations

from .fr import (
    Reduction,
    TargetFeatures,
    prepare_pair,
    prepare_pred,
    reduce_loss,
    to_unit_rgb,
    topiq_fr,
    topiq_fr_features,
    topiq_fr_loss,
    topiq_fr_target_features,
)
from .nr import (
    prepare_image,
    resize_short_side,
    score_to_loss,
    topiq_nr,
    topiq_nr_features,
    topiq_nr_loss,
)

__all__ = [
    "Reduction",
    "TargetFeatures",
    "prepare_image",
    "prepare_pair",
    "prepare_pred",
    "reduce_loss",
    "resize_short_side",
    "score_to_loss",
    "to_unit_rgb",
    "topiq_fr",
    "topiq_fr_features",
    "topiq_fr_loss",
    "topiq_fr_target_features",
    "topiq_nr",
    "topiq_nr_features",
    "topiq_nr_loss",
]
