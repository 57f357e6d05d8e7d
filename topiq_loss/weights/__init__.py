"""Where networks' weights come from: the registry, downloads, integrity, and the one
reader every weights file goes through (TOPIQ and LPIPS alike).

The package re-exports the registry's names, so 0.4's ``from topiq_loss.weights import
WEIGHTS`` keeps working.
"""

from __future__ import annotations

# The 0.4 module's names, re-exported as one piece: registry.__all__ is the one list.
from .registry import *  # noqa: F403
from .registry import __all__  # noqa: F401
