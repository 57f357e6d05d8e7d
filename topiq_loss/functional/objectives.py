"""What a TOPIQ loss minimises: the published score, or the deficit against the target.

TOPIQ is a quality *score*, not a distance: the FR network gates the distorted
image's own features, so ``score(t, t)`` is neither 1 nor a maximum, and ``1 - score``
rewards moving a prediction wherever the network scores higher, past the reference
included. The anchored objective penalises the quality deficit relative to the
target scored against itself, in either direction, so the loss and its gradient are
0 exactly at the target (see docs/objectives.md for the measurements behind it).
"""

from __future__ import annotations

from typing import Literal

import torch

from .. import _checks

__all__ = ["ANCHOR_EPS", "OBJECTIVES", "Objective", "anchored_penalty", "check_loss_options", "check_objective"]

Objective = Literal["anchored", "score"]
OBJECTIVES = ("anchored", "score")

#: Width of the quadratic bowl of the anchored penalty, in score units. Measured with
#: ``benchmarks/objectives.py --rho`` (docs/objectives.md): the widest Charbonnier that keeps
#: the score objective's gradient size (0.99x at a blurred start), so weights tuned for
#: ``objective="score"`` keep their meaning; wider bowls trade that size for fidelity.
ANCHOR_EPS = 1e-2


def check_objective(objective: object) -> Objective:
    """``objective`` if it is one of :data:`OBJECTIVES`, else a ValueError naming them."""
    return _checks.check_choice(objective, "objective", OBJECTIVES)  # type: ignore[return-value]


def check_loss_options(objective: object, reduction: object, loss_weight: object) -> tuple[Objective, float]:
    """The options every functional loss takes, checked before any network runs:
    ``(objective, loss_weight)`` (``reduction`` is only checked)."""
    weight = _checks.check_loss_weight(loss_weight)
    _checks.check_reduction(reduction)
    return check_objective(objective), weight


def anchored_penalty(deficit: torch.Tensor, eps: float = ANCHOR_EPS) -> torch.Tensor:
    """Charbonnier penalty ``sqrt(d^2 + eps^2) - eps`` of a score difference ``d``.

    Even, smooth, >= 0, and 0 with a zero gradient at ``d = 0``; about ``|d|`` (slope 1,
    the score objective's) once ``|d| >> eps``. Written as ``d^2 / (sqrt(d^2 + eps^2) + eps)``,
    the same value without the cancellation, so ``d = 0`` gives exactly 0.

    Shape: any -> same.
    """
    sq = deficit.square()
    return sq / (torch.sqrt(sq + eps * eps) + eps)
