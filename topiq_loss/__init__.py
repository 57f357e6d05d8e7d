"""topiq_loss: TOPIQ-FR (CFANet-FR) as a frozen, differentiable perceptual loss."""

from __future__ import annotations

import logging

from .adapters import (
    DenoiseLoss,
    GeneratorLoss,
    SRLoss,
    adversarial_d_loss,
    adversarial_g_loss,
    pixel_loss,
)
from .backbone import ResNet50Features
from .cfanet import CFANetFeatures, CFANetFR
from .functional import (
    TargetFeatures,
    topiq_fr,
    topiq_fr_features,
    topiq_fr_loss,
    topiq_fr_target_features,
)
from .hub import WeightsError, default_cache_dir, download_weights, read_state_dict
from .loss import TOPIQLoss, TOPIQTarget, build_network
from .maps import LEVELS, QualityMaps, quality_maps, render_maps
from .weights import DEFAULT_WEIGHTS, WEIGHTS, WeightsEntry

__version__ = "0.1.0"

__all__ = [
    "CFANetFR",
    "CFANetFeatures",
    "DEFAULT_WEIGHTS",
    "DenoiseLoss",
    "GeneratorLoss",
    "LEVELS",
    "QualityMaps",
    "ResNet50Features",
    "SRLoss",
    "TOPIQLoss",
    "TOPIQTarget",
    "TargetFeatures",
    "WEIGHTS",
    "WeightsEntry",
    "WeightsError",
    "adversarial_d_loss",
    "adversarial_g_loss",
    "build_network",
    "default_cache_dir",
    "download_weights",
    "pixel_loss",
    "quality_maps",
    "read_state_dict",
    "render_maps",
    "topiq_fr",
    "topiq_fr_features",
    "topiq_fr_loss",
    "topiq_fr_target_features",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
