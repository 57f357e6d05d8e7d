"""Where networks' weights come from: the registry, downloads, integrity, and the one
reader every weights file goes through (TOPIQ and LPIPS alike).

The package re-exports the registry's names, so 0.4's ``from topiq_loss.weights import
WEIGHTS`` keeps working.
"""

from __future__ import annotations

from .registry import (
    BUILD_BY_KIND,
    DEFAULT_NR_WEIGHTS,
    DEFAULT_WEIGHTS,
    DEFAULT_WEIGHTS_BY_KIND,
    KINDS,
    NR_WEIGHTS,
    RANDOM,
    REGISTRY,
    WEIGHTS,
    Kind,
    WeightsArgumentError,
    WeightsEntry,
    WeightsError,
    WeightsFileNotFoundError,
    WeightsKindError,
    WeightsView,
    check_kind,
    entry_for_file,
    get_weights_entry,
    is_random,
    list_weights,
)

__all__ = [
    "BUILD_BY_KIND",
    "DEFAULT_NR_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "DEFAULT_WEIGHTS_BY_KIND",
    "KINDS",
    "Kind",
    "NR_WEIGHTS",
    "RANDOM",
    "REGISTRY",
    "WEIGHTS",
    "WeightsArgumentError",
    "WeightsEntry",
    "WeightsError",
    "WeightsFileNotFoundError",
    "WeightsKindError",
    "WeightsView",
    "check_kind",
    "entry_for_file",
    "get_weights_entry",
    "is_random",
    "list_weights",
]
