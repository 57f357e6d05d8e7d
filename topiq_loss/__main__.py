"""``python -m topiq_loss``: the ``topiq-loss`` command."""

from __future__ import annotations

import sys

from .cli.app import main

sys.exit(main())
