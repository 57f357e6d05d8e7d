"""topiq_loss: TOPIQ (CFANet, full-reference and no-reference) as frozen, differentiable losses."""

from __future__ import annotations

import logging

from . import _compat
from .functional.fr import TargetFeatures as TargetFeatures  # noqa: E402
from .functional.fr import topiq_fr, topiq_fr_loss
from .functional.fr import topiq_fr_features as topiq_fr_features  # noqa: E402
from .functional.fr import topiq_fr_target_features as topiq_fr_target_features  # noqa: E402
from .functional.maps import LEVELS as LEVELS  # noqa: E402
from .functional.maps import QualityMaps, quality_maps
from .functional.maps import render_maps as render_maps  # noqa: E402
from .functional.nr import topiq_nr, topiq_nr_loss
from .functional.nr import topiq_nr_features as topiq_nr_features  # noqa: E402
from .functional.robust import RandomTransforms
from .losses.fr import TOPIQLoss, TOPIQTarget
from .losses.lpips import LPIPSLoss, LPIPSPlusLoss
from .losses.nr import TOPIQNRLoss
from .losses.nr import build_nr_network as build_nr_network  # noqa: E402

# Kept importable from here for 0.3 code (the `as` spelling marks a deliberate re-export);
# new code imports them from their modules.
from .models.backbone import ResNet50Features as ResNet50Features  # noqa: E402
from .models.cfanet_fr import CFANetFeatures as CFANetFeatures  # noqa: E402
from .models.cfanet_fr import CFANetFR
from .models.cfanet_nr import CFANetNR
from .training.gan import GeneratorLoss, adversarial_d_loss, adversarial_g_loss
from .training.restoration import DenoiseLoss, SRLoss, pixel_loss
from .weights.builder import build_network
from .weights.hub import WeightsError, download_weights
from .weights.hub import default_cache_dir as default_cache_dir  # noqa: E402
from .weights.hub import read_state_dict as read_state_dict  # noqa: E402
from .weights.registry import DEFAULT_NR_WEIGHTS as DEFAULT_NR_WEIGHTS  # noqa: E402
from .weights.registry import DEFAULT_WEIGHTS as DEFAULT_WEIGHTS  # noqa: E402
from .weights.registry import NR_WEIGHTS as NR_WEIGHTS  # noqa: E402
from .weights.registry import REGISTRY, list_weights
from .weights.registry import WEIGHTS as WEIGHTS  # noqa: E402
from .weights.registry import WeightsEntry as WeightsEntry  # noqa: E402

__version__ = "0.5.0.dev0"

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

_compat.install()


def __getattr__(name: str) -> object:
    # 0.4's module paths read as attributes (``topiq_loss.hub``) before any import of them.
    return _compat.attribute(__name__, name)
