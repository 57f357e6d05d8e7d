"""Where networks' weights come from; re-exports the registry's names (0.4's ``topiq_loss.weights``)."""

from __future__ import annotations

from .registry import *  # noqa: F403
from .registry import __all__  # noqa: F401
