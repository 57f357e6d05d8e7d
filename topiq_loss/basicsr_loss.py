"""BasicSR integration: ``import topiq_loss.basicsr_loss`` registers ``BasicSRTOPIQLoss``.

BasicSR builds losses by name from its ``LOSS_REGISTRY``; importing this module
(e.g. at the top of a BasicSR-based ``train.py``) adds the TOPIQ loss there when
basicsr is importable, and does nothing otherwise. topiq_loss never depends on
basicsr. YAML::

    train:
      perceptual_opt:            # SRGANModel / ESRGANModel slot: returns (loss, None)
        type: BasicSRTOPIQLoss
        loss_weight: 1.0
        weights: kadid
        as_perceptual: true
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from typing import Any

import torch
import torch.nn as nn

from . import _checks
from .functional import Reduction, reduce_loss
from .loss import TOPIQLoss
from .objectives import Objective, check_objective
from .weights import DEFAULT_WEIGHTS

__all__ = ["BasicSRTOPIQLoss", "register_basicsr"]

_log = logging.getLogger(__name__)


class BasicSRTOPIQLoss(nn.Module):
    """TOPIQ-FR loss with BasicSR's loss signature and options.

    Args:
        loss_weight: multiplies the loss (BasicSR convention).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        weights: ``"kadid"`` | ``"pipal"`` | checkpoint path.
        input_range: (low, high) of pixel values, e.g. ``[0, 1]``.
        checkpoint: gradient checkpointing (less memory).
        as_perceptual: return ``(loss, None)`` as BasicSR's ``PerceptualLoss`` does,
            for the ``perceptual_opt`` slot of SRGAN/ESRGAN models; else return the
            loss alone (``pixel_opt`` and custom slots).
        robust, robust_samples: the random-transformation ensemble of
            :class:`~topiq_loss.TOPIQLoss` (``robust: true`` in the YAML).
        objective: ``"anchored"`` (the default when the loss is built here; 0 with a
            zero gradient at the target) or ``"score"`` (``1 - score``, the published
            score; not minimised at the target); ``None`` with ``topiq=`` takes its objective.

    Shape:
        - pred, target: (N, C, H, W), C in (1, 3), H, W >= 32.
        - weight: None, or per-sample weights broadcastable to (N,) (e.g. (N, 1, 1, 1)).
          Per-pixel weights have no meaning for a whole-image score and are refused.
    """

    #: A loss: lower is better.
    higher_is_better = False

    def __init__(
        self,
        loss_weight: float = 1.0,
        reduction: Reduction = "mean",
        weights: str | os.PathLike[str] = DEFAULT_WEIGHTS,
        input_range: tuple[float, float] = (0.0, 1.0),
        checkpoint: bool = False,
        as_perceptual: bool = False,
        topiq: TOPIQLoss | None = None,
        robust: bool = False,
        robust_samples: int = 1,
        objective: Objective | None = None,
    ) -> None:
        super().__init__()
        objective = None if objective is None else check_objective(objective)
        self.loss_weight = _checks.check_loss_weight(loss_weight)
        self.reduction = _checks.check_reduction(reduction)
        self.as_perceptual = _checks.check_bool(as_perceptual, "as_perceptual")
        if topiq is None:
            topiq = TOPIQLoss(
                weights=weights,
                input_range=_checks.check_input_range(input_range),
                checkpoint=checkpoint,
                robust=robust,
                robust_samples=robust_samples,
                objective=objective or "anchored",
            )
        elif not isinstance(topiq, TOPIQLoss):
            raise TypeError(f"`topiq` must be a TOPIQLoss or None; got {type(topiq).__name__}")
        elif tuple(input_range) != topiq.input_range:
            raise ValueError(
                f"`input_range={tuple(input_range)}` differs from the given TOPIQLoss's "
                f"{topiq.input_range}: set it on the TOPIQLoss (it is the one used)"
            )
        elif objective is not None and objective != topiq.objective:
            raise ValueError(
                f"`objective={objective!r}` differs from the given TOPIQLoss's objective {topiq.objective!r}"
            )
        self.topiq = topiq

    def train(self, mode: bool = True) -> BasicSRTOPIQLoss:
        return super().train(False)

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, None]:
        values = self.topiq.loss_values(pred, target)
        if weight is not None:
            if not isinstance(weight, torch.Tensor) or weight.numel() not in (1, values.numel()):
                got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
                raise ValueError(
                    f"`weight` must be None or per-sample weights with {values.numel()} elements "
                    f"(e.g. shape ({values.numel()}, 1, 1, 1)); got {got}"
                )
            _checks.check_finite(weight, "weight")
            values = values * weight.reshape(-1).to(values)
        loss = self.loss_weight * reduce_loss(values, self.reduction)
        return (loss, None) if self.as_perceptual else loss


def register_basicsr(registry: Any | None = None) -> bool:
    """Add :class:`BasicSRTOPIQLoss` to BasicSR's ``LOSS_REGISTRY`` (or ``registry``).

    Returns True if it is registered (now or before), False if basicsr is not importable.
    """
    if registry is None:
        try:
            from basicsr.utils.registry import LOSS_REGISTRY
        except ImportError as exc:
            if importlib.util.find_spec("basicsr") is not None:
                # Installed but broken (e.g. an old basicsr against a new torchvision):
                # say so now rather than let build_loss fail later with "not found".
                warnings.warn(
                    f"basicsr is installed but could not be imported ({exc}); "
                    "BasicSRTOPIQLoss was not registered in its LOSS_REGISTRY",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return False
        registry = LOSS_REGISTRY
    name = BasicSRTOPIQLoss.__name__
    if name not in registry:  # BasicSR's Registry refuses a second registration
        registry.register(BasicSRTOPIQLoss)
        _log.debug("registered %s in BasicSR's LOSS_REGISTRY", name)
    return True


register_basicsr()
