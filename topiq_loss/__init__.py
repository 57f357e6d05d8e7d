"""topiq_loss: TOPIQ (CFANet, full-reference and no-reference) as frozen, differentiable losses."""

from __future__ import annotations

import logging

from .adapters import DenoiseLoss, SRLoss, pixel_loss

# Kept importable from here for 0.3 code (the `as` spelling marks a deliberate re-export);
# new code imports them from their modules.
from .backbone import ResNet50Features as ResNet50Features  # noqa: E402
from .cfanet import CFANetFeatures as CFANetFeatures  # noqa: E402
from .cfanet import CFANetFR
from .cfanet_nr import CFANetNR
from .functional import TargetFeatures as TargetFeatures  # noqa: E402
from .functional import topiq_fr, topiq_fr_loss
from .functional import topiq_fr_features as topiq_fr_features  # noqa: E402
from .functional import topiq_fr_target_features as topiq_fr_target_features  # noqa: E402
from .functional_nr import topiq_nr, topiq_nr_loss
from .functional_nr import topiq_nr_features as topiq_nr_features  # noqa: E402
from .gan import GeneratorLoss, adversarial_d_loss, adversarial_g_loss
from .hub import WeightsError, download_weights
from .hub import default_cache_dir as default_cache_dir  # noqa: E402
from .hub import read_state_dict as read_state_dict  # noqa: E402
from .loss import TOPIQLoss, TOPIQTarget
from .loss_nr import TOPIQNRLoss
from .loss_nr import build_nr_network as build_nr_network  # noqa: E402
from .lpips_loss import LPIPSLoss, LPIPSPlusLoss
from .maps import LEVELS as LEVELS  # noqa: E402
from .maps import QualityMaps, quality_maps
from .maps import render_maps as render_maps  # noqa: E402
from .networks import build_network
from .robust import RandomTransforms
from .weights import DEFAULT_NR_WEIGHTS as DEFAULT_NR_WEIGHTS  # noqa: E402
from .weights import DEFAULT_WEIGHTS as DEFAULT_WEIGHTS  # noqa: E402
from .weights import NR_WEIGHTS as NR_WEIGHTS  # noqa: E402
from .weights import REGISTRY, list_weights
from .weights import WEIGHTS as WEIGHTS  # noqa: E402
from .weights import WeightsEntry as WeightsEntry  # noqa: E402

__version__ = "0.4.0.dev0"

# What a user imports (25 names, 41 in 0.3).
__all__ = [
    "CFANetFR",
    "CFANetNR",
    "DenoiseLoss",
    "GeneratorLoss",
    "LPIPSLoss",
    "LPIPSPlusLoss",
    "QualityMaps",
    "REGISTRY",
    "RandomTransforms",
    "SRLoss",
    "TOPIQLoss",
    "TOPIQNRLoss",
    "TOPIQTarget",
    "WeightsError",
    "adversarial_d_loss",
    "adversarial_g_loss",
    "build_network",
    "download_weights",
    "list_weights",
    "pixel_loss",
    "quality_maps",
    "topiq_fr",
    "topiq_fr_loss",
    "topiq_nr",
    "topiq_nr_loss",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
