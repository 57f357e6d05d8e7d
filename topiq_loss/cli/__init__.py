"""The ``topiq-loss`` command (entry point ``topiq_loss.cli:main``; also ``python -m topiq_loss.cli``,
``python -m topiq_loss`` and ``python -m topiq_loss.cli.app``).

The names below are read from :mod:`topiq_loss.cli.app` when first asked for: importing the
package does not import ``app``, so that ``python -m topiq_loss.cli.app`` runs that module
once, as ``__main__`` (runpy warns when the package has imported it before).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import add_weights_option, main, read_image, to_pil, weights_arg

__all__ = [
    "add_weights_option",
    "main",
    "read_image",
    "to_pil",
    "weights_arg",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".app", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
