"""``python -m topiq_loss.cli``: the ``topiq-loss`` command."""

from __future__ import annotations

import sys

from .app import main

sys.exit(main())
