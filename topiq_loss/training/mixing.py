"""The weighted mix every restoration adapter computes: pixel, TOPIQ, NR and LPIPS terms.

``MixedLoss`` holds the terms (each a frozen loss module, shared or built here) and returns
their unweighted per-sample parts and the weighted total, with the images' values checked
once per call; :mod:`topiq_loss.training.restoration` and :mod:`topiq_loss.training.gan` choose what is compared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn as nn

from .. import _checks
from ..functional.fr import Reduction, reduce_loss
from ..functional.objectives import Objective, check_objective
from ..losses.fr import TOPIQLoss
from ..losses.lpips import LPIPSLoss, LPIPSPlusLoss
from ..losses.nr import TOPIQNRLoss
from ..weights.registry import DEFAULT_NR_WEIGHTS, is_random

__all__ = ["PIXEL_KINDS", "MixedLoss", "PixelKind", "pixel_loss"]

PixelKind = Literal["l1", "charbonnier", "mse"]
PIXEL_KINDS = ("l1", "charbonnier", "mse")


def pixel_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    kind: PixelKind = "l1",
    reduction: Reduction = "mean",
    eps: float = 1e-3,
) -> torch.Tensor:
    """Per-pixel fidelity, averaged over (C, H, W) per sample, then reduced over the batch.

    ``"charbonnier"`` is ``sqrt((pred - target)^2 + eps^2)``, a smooth L1.

    Shape:
        - pred, target: (N, C, H, W), same shape.
        - Output: scalar, or (N,) with ``reduction="none"``.
    """
    kind = _checks.check_choice(kind, "kind", PIXEL_KINDS)  # type: ignore[assignment]
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(
            f"`pred` and `target` must be tensors; got {type(pred).__name__} and {type(target).__name__}"
        )
    if pred.shape != target.shape:
        # Broadcasting would silently compare every prediction with every target.
        raise ValueError(
            f"`pred` and `target` must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    diff = pred - target
    if kind == "l1":
        err = diff.abs()
    elif kind == "mse":
        err = diff.square()
    else:
        err = torch.sqrt(diff.square() + eps * eps)
    return reduce_loss(err.flatten(1).mean(dim=1), reduction)


def _topiq_from(topiq: TOPIQLoss | None, topiq_kwargs: dict[str, Any], objective: Objective | None) -> TOPIQLoss:
    for key in ("loss_weight", "reduction"):
        if key in topiq_kwargs:
            raise ValueError(
                f"`{key}` is not a TOPIQLoss option here: the adapter weights the TOPIQ term "
                f"with `topiq_weight` and reduces with its own `reduction`"
            )
    if topiq is None:
        return TOPIQLoss(reduction="none", objective=objective or "anchored", **topiq_kwargs)
    if not isinstance(topiq, TOPIQLoss):
        raise TypeError(f"`topiq` must be a TOPIQLoss; got {type(topiq).__name__}")
    if topiq_kwargs:
        raise ValueError(
            f"give either `topiq` or TOPIQLoss options, not both; got topiq and {sorted(topiq_kwargs)}"
        )
    if objective is not None and objective != topiq.objective:
        raise ValueError(
            f"`objective={objective!r}` differs from the given TOPIQLoss's objective "
            f"{topiq.objective!r}: set it on the TOPIQLoss, or leave `objective` unset"
        )
    return topiq


def _nr_from(
    nr: TOPIQNRLoss | str | os.PathLike[str] | None, weight: float, objective: Objective, random: bool
) -> TOPIQNRLoss | None:
    if isinstance(nr, TOPIQNRLoss):
        return nr
    if nr is not None and not isinstance(nr, (str, os.PathLike)):
        raise TypeError(f"`nr` must be a TOPIQNRLoss, NR weights (name or path) or None; got {type(nr).__name__}")
    if weight == 0 and nr is None:
        return None
    weights = nr if nr is not None else (None if random else DEFAULT_NR_WEIGHTS)
    return TOPIQNRLoss(weights=weights, reduction="none", objective=objective)


class MixedLoss(nn.Module):
    """``pixel_weight * pixel + topiq_weight * topiq + nr_weight * nr``; subclasses
    choose what is compared."""

    def __init__(
        self,
        *,
        pixel: PixelKind | None,
        pixel_weight: float,
        topiq_weight: float,
        reduction: Reduction,
        topiq: TOPIQLoss | None,
        topiq_kwargs: dict[str, Any],
        nr_weight: float = 0.0,
        nr: TOPIQNRLoss | str | os.PathLike[str] | None = None,
        objective: Objective | None = None,
        lpips_weight: float = 0.0,
        lpips: LPIPSLoss | None = None,
    ) -> None:
        super().__init__()
        objective = None if objective is None else check_objective(objective)
        self.pixel = None if pixel is None else _checks.check_choice(pixel, "pixel", PIXEL_KINDS)
        self.pixel_weight = _checks.check_non_negative(pixel_weight, "pixel_weight")
        self.topiq_weight = _checks.check_non_negative(topiq_weight, "topiq_weight")
        self.nr_weight = _checks.check_non_negative(nr_weight, "nr_weight")
        self.lpips_weight = _checks.check_non_negative(lpips_weight, "lpips_weight")
        if (self.pixel is None or self.pixel_weight == 0) and self.topiq_weight == self.nr_weight == self.lpips_weight == 0:
            raise ValueError(
                "nothing to compute: give `pixel` with `pixel_weight` > 0, `topiq_weight` > 0, "
                "`nr_weight` > 0 or `lpips_weight` > 0"
            )
        if lpips is not None and not isinstance(lpips, LPIPSLoss):
            raise TypeError(f"`lpips` must be an LPIPSLoss / LPIPSPlusLoss or None; got {type(lpips).__name__}")
        self.reduction = _checks.check_reduction(reduction)
        # Random TOPIQ weights (tests) make every term built here random: no download.
        random = "weights" in topiq_kwargs and is_random(topiq_kwargs["weights"])
        # LPIPS+ (the TOPIQ paper's semantic-weighted LPIPS) by default: a distance, 0 at the target.
        self.lpips = (
            lpips if lpips is not None or self.lpips_weight == 0
            else LPIPSPlusLoss(weights="random" if random else "default", reduction="none")
        )
        # Submodules: they keep their networks out of state_dict()/parameters() themselves.
        self.topiq = _topiq_from(topiq, topiq_kwargs, objective)
        self.nr = _nr_from(nr, self.nr_weight, self.topiq.objective, random)

    def _mix(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        names: tuple[str, str],
        inputs: Sequence[tuple[torch.Tensor, str]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The terms of ``pred`` against ``target``. ``names`` are the caller's names for the
        two, ``inputs`` the caller's own arguments with their names (default the pair): every
        check of the call names what the user passed (``sr``/``hr``, ``noisy``), never ``pred``."""
        if self.topiq_weight > 0 or (self.nr is not None and self.nr_weight > 0):
            # Shapes and dtypes first, in the caller's names (the terms below would say `pred`).
            _checks.check_pair(pred, target, pred_name=names[0], target_name=names[1], values=False)
        terms: dict[str, torch.Tensor] = {}
        total = pred.new_zeros(pred.shape[0])
        if self.pixel is not None and self.pixel_weight > 0:
            terms["pixel"] = pixel_loss(pred, target, self.pixel, reduction="none")  # type: ignore[arg-type]
            total = total + self.pixel_weight * terms["pixel"]
        if self.topiq_weight > 0:
            # Per sample, by the TOPIQLoss's objective; its own loss_weight/reduction are not used.
            terms["topiq"] = self.topiq.loss_values(pred, target, check_values=False)
            total = total + self.topiq_weight * terms["topiq"]
        if self.nr is not None and self.nr_weight > 0:
            # 0 is best, whatever the NR entry's range; anchored to the target unless the
            # NR loss scores images alone. Its own weight and reduction are not used.
            anchored = self.nr.objective == "anchored"
            terms["nr"] = self.nr.loss_values(pred, target if anchored else None, check_values=False)
            total = total + self.nr_weight * terms["nr"]
        if self.lpips is not None and self.lpips_weight > 0:
            terms["lpips"] = self.lpips.score(pred, target)
            total = total + self.lpips_weight * terms["lpips"]
        if self.topiq.check_values:
            # The images and the total are read once here (one host sync), not again by
            # each term; NaN must not pass as a pixel loss either.
            images = list(inputs) if inputs is not None else [(pred, names[0]), (target, names[1])]
            shown = " and ".join(f"`{n}`" for _, n in images)
            _checks.check_values(images, total, shown, self.topiq.input_range, owner=self)
        terms = {k: reduce_loss(v, self.reduction) for k, v in terms.items()}
        terms["total"] = reduce_loss(total, self.reduction)
        return terms

    #: A loss: lower is better (the torchmetrics attribute frameworks check).
    higher_is_better = False

    def train(self, mode: bool = True) -> MixedLoss:
        """No-op: holds only the frozen TOPIQ network, which stays in eval mode."""
        return super().train(False)
