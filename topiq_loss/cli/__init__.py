"""The ``topiq-loss`` command (entry point ``topiq_loss.cli:main``).
"""

from __future__ import annotations

from .app import (
    add_weights_option,
    main,
    read_image,
    to_pil,
    weights_arg,
)

__all__ = [
    "add_weights_option",
    "main",
    "read_image",
    "to_pil",
    "weights_arg",
]
