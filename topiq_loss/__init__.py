"""topiq_loss: TOPIQ (CFANet, full-reference and no-reference) as frozen, differentiable losses."""

from __future__ import annotations

import logging

from .adapters import DenoiseLoss, SRLoss, pixel_loss
from .backbone import ResNet50Features
from .cfanet import CFANetFeatures, CFANetFR
from .cfanet_nr import CFANetNR
from .functional import (
    TargetFeatures,
    topiq_fr,
    topiq_fr_features,
    topiq_fr_loss,
    topiq_fr_target_features,
)
from .functional_nr import topiq_nr, topiq_nr_features, topiq_nr_loss
from .gan import GeneratorLoss, adversarial_d_loss, adversarial_g_loss
from .hub import WeightsError, default_cache_dir, download_weights, read_state_dict
from .loss import TOPIQLoss, TOPIQTarget, build_network
from .loss_nr import TOPIQNRLoss, build_nr_network
from .lpips_loss import LPIPSLoss, LPIPSPlusLoss
from .maps import LEVELS, QualityMaps, quality_maps, render_maps
from .robust import RandomTransforms
from .weights import (
    DEFAULT_NR_WEIGHTS,
    DEFAULT_WEIGHTS,
    NR_WEIGHTS,
    REGISTRY,
    WEIGHTS,
    WeightsEntry,
    list_weights,
)

__version__ = "0.3.0"

__all__ = [
    "CFANetFR",
    "CFANetFeatures",
    "CFANetNR",
    "DEFAULT_NR_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "DenoiseLoss",
    "GeneratorLoss",
    "LEVELS",
    "LPIPSLoss",
    "LPIPSPlusLoss",
    "NR_WEIGHTS",
    "QualityMaps",
    "REGISTRY",
    "RandomTransforms",
    "ResNet50Features",
    "SRLoss",
    "TOPIQLoss",
    "TOPIQNRLoss",
    "TOPIQTarget",
    "TargetFeatures",
    "WEIGHTS",
    "WeightsEntry",
    "WeightsError",
    "adversarial_d_loss",
    "adversarial_g_loss",
    "build_network",
    "build_nr_network",
    "default_cache_dir",
    "download_weights",
    "list_weights",
    "pixel_loss",
    "quality_maps",
    "read_state_dict",
    "render_maps",
    "topiq_fr",
    "topiq_fr_features",
    "topiq_fr_loss",
    "topiq_fr_target_features",
    "topiq_nr",
    "topiq_nr_features",
    "topiq_nr_loss",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
