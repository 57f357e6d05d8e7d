"""Deprecated: use :mod:`topiq_loss.integrations.basicsr` (removed in the next release).

Importing this module still registers ``BasicSRTOPIQLoss`` (and now the metrics) in
BasicSR's registries, and warns once with a DeprecationWarning.
"""

from __future__ import annotations

import sys
import warnings

from .integrations.basicsr import BasicSRTOPIQLoss, register_basicsr

__all__ = ["BasicSRTOPIQLoss", "register_basicsr"]


def _caller_stacklevel() -> int:
    """The stacklevel of the first frame outside topiq_loss, so that the warning names the
    user's import line (warnings already skips importlib's bootstrap frames)."""
    frame = sys._getframe(1)  # this module's body: stacklevel 1
    level = 1
    while frame.f_back is not None:
        frame = frame.f_back
        file = frame.f_code.co_filename
        if "importlib" in file and "_bootstrap" in file:
            continue
        level += 1
        if not str(frame.f_globals.get("__name__", "")).startswith("topiq_loss"):
            break
    return level


warnings.warn(
    "topiq_loss.basicsr_loss is deprecated and will be removed in the next release: "
    "import topiq_loss.integrations.basicsr instead",
    DeprecationWarning,
    stacklevel=_caller_stacklevel(),
)
