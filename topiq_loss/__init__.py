"""topiq_loss: TOPIQ-FR (CFANet-FR) as a frozen, differentiable perceptual loss."""

from __future__ import annotations

import logging

from .backbone import ResNet50Features
from .cfanet import CFANetFeatures, CFANetFR
from .functional import topiq_fr, topiq_fr_features, topiq_fr_loss
from .hub import WeightsError, default_cache_dir, download_weights, read_state_dict
from .loss import TOPIQLoss, build_network
from .weights import DEFAULT_WEIGHTS, WEIGHTS, WeightsEntry

__version__ = "0.1.0"

__all__ = [
    "CFANetFR",
    "CFANetFeatures",
    "DEFAULT_WEIGHTS",
    "ResNet50Features",
    "TOPIQLoss",
    "WEIGHTS",
    "WeightsEntry",
    "WeightsError",
    "build_network",
    "default_cache_dir",
    "download_weights",
    "read_state_dict",
    "topiq_fr",
    "topiq_fr_features",
    "topiq_fr_loss",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
