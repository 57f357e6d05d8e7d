"""traiNNer-redux plug: a TOPIQ loss and metrics in its registries.

traiNNer-redux is not on PyPI. Its loss registry imports every
``traiNNer/losses/*_loss.py`` and looks classes up by lower-cased name, so a file
``traiNNer/losses/topiq_loss_loss.py`` holding::

    from topiq_loss.integrations.trainner_redux import register

    register()

makes ``type: topiqloss`` and ``type: lpipsplusloss`` (losses) and ``type: calculate_topiq_metric`` /
``calculate_topiq_nr_metric`` (metrics) available in its YAML. The metrics have
their own names: traiNNer-redux ships a ``calculate_topiq`` of its own, which
its registry would refuse to see registered twice.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Literal

import torch
import torch.nn as nn

from .. import _checks
from ..functional.objectives import Objective, check_objective
from ..losses.fr import TOPIQLoss as _TOPIQLoss
from ..weights.registry import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS
from ._common import LPIPSPlusPlug, as_float32, check_plug_options, numpy_image, score_fr, score_nr, upsample_to_min

__all__ = ["LPIPSPlusLoss", "TOPIQLoss", "calculate_topiq_metric", "calculate_topiq_nr_metric", "register"]

_log = logging.getLogger(__name__)


class TOPIQLoss(nn.Module):
    """TOPIQ-FR loss for traiNNer-redux (``type: topiqloss``); returns the UNWEIGHTED loss.

    traiNNer-redux multiplies every loss by ``abs(loss_weight)`` itself, so ``forward``
    returns the mean anchored (or score) loss alone. It runs in float32 with autocast
    off (traiNNer-redux's losses do the same with ``custom_fwd(cast_inputs=float32)``).
    Images with a side under 32 pixels, the network's minimum, are enlarged
    bilinearly (both alike, aspect kept) until the short side is 32.

    Args:
        loss_weight: read by traiNNer-redux (negative: compare with the upscaled LR).
        weights: ``"kadid"`` (default), ``"pipal"``, a checkpoint path or ``"random"`` (tests only).
        objective: ``"anchored"`` (default; 0 at the target) or ``"score"``.
        input_range: (low, high) of pixel values.
        checkpoint: gradient checkpointing (less memory).
        topiq: a prebuilt :class:`~topiq_loss.TOPIQLoss` to use instead (tests, sharing).
        **kwargs: refused, listing the valid options (a typo must not train with the defaults).

    Shape:
        - pred, target: (N, C, H, W), C in (1, 3), any H, W >= 1. Output: scalar.
    """

    def __init__(
        self,
        loss_weight: float,
        weights: str | os.PathLike[str] = DEFAULT_WEIGHTS,
        objective: Objective = "anchored",
        input_range: tuple[float, float] = (0.0, 1.0),
        checkpoint: bool = False,
        topiq: _TOPIQLoss | None = None,
        **kwargs: Any,
    ) -> None:
        check_plug_options(type(self), kwargs)  # before a network is built
        super().__init__()
        # Kept signed: a negative weight is traiNNer-redux's switch to the upscaled-LR target.
        self.loss_weight = _checks.check_loss_weight(loss_weight)
        if topiq is not None and not isinstance(topiq, _TOPIQLoss):
            raise TypeError(f"`topiq` must be a TOPIQLoss or None; got {type(topiq).__name__}")
        checkpoint = _checks.check_bool(checkpoint, "checkpoint")  # every option before a build
        if topiq is None:
            topiq = _TOPIQLoss(
                weights=weights, objective=check_objective(objective),
                input_range=_checks.check_input_range(input_range),
            ).set_grad_checkpointing(checkpoint)
        self.topiq = topiq

    def train(self, mode: bool = True) -> TOPIQLoss:
        return super().train(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return as_float32(self._loss)(pred, target)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = upsample_to_min(pred, target)
        return self.topiq.loss_values(pred, target).mean()


class LPIPSPlusLoss(LPIPSPlusPlug):
    """LPIPS+ loss for traiNNer-redux (``type: lpipsplusloss``); returns the UNWEIGHTED loss.

    The TOPIQ paper's semantic-weighted LPIPS (:class:`~topiq_loss.LPIPSPlusLoss`): a
    distance, 0 at the target. Same conventions as :class:`TOPIQLoss` here: unweighted
    mean (a negative ``loss_weight`` compares with the upscaled LR), float32 with autocast
    off, inputs under 32 pixels enlarged. Args: ``loss_weight``, ``net`` (``"alex"`` |
    ``"vgg"``), ``weights`` (``"default"`` | path | ``"random"``), ``semantic_layer`` (2), ``input_range``,
    ``checkpoint``, ``lpips`` (prebuilt); see :class:`~topiq_loss.integrations._common.LPIPSPlusPlug`.

    Shape:
        - pred, target: (N, C, H, W), C in (1, 3), any H, W >= 1. Output: scalar.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.loss_values(pred, target).mean()


def calculate_topiq_metric(
    img: Any,
    img2: Any,
    device: str | torch.device | None = None,
    crop_border: int = 0,
    weights: str | os.PathLike[str] = DEFAULT_WEIGHTS,
    **kwargs: Any,
) -> float:
    """TOPIQ-FR score of ``img`` against ``img2``, higher is better (traiNNer-redux metric).

    Args:
        img, img2: (H, W, C) numpy arrays in RGB order with values 0..255, as
            traiNNer-redux's validation passes them.
        device: the model's device (traiNNer-redux passes it); default CUDA when available.
        crop_border: pixels dropped at each edge first.
        weights: ``"kadid"`` (default), ``"pipal"``, a checkpoint path or ``"random"`` (tests only).
    """
    x = numpy_image(img, "img", crop_border=crop_border, bgr=False)
    y = numpy_image(img2, "img2", crop_border=crop_border, bgr=False)
    return score_fr(x, y, weights, device)


def calculate_topiq_nr_metric(
    img: Any,
    device: str | torch.device | None = None,
    crop_border: int = 0,
    weights: str | os.PathLike[str] = DEFAULT_NR_WEIGHTS,
    resize: int | None | Literal["auto"] = "auto",
    **kwargs: Any,
) -> float:
    """No-reference TOPIQ score of ``img`` (traiNNer-redux metric; ``img2`` is ignored)."""
    return score_nr(numpy_image(img, "img", crop_border=crop_border, bgr=False), weights, device, resize)


def register(loss_registry: Any | None = None, metric_registry: Any | None = None) -> None:
    """Add :class:`TOPIQLoss` (as ``topiqloss``), :class:`LPIPSPlusLoss` (as
    ``lpipsplusloss``) and the two metrics to traiNNer-redux's registries (or to those
    given); registering twice is a no-op."""
    if loss_registry is None or metric_registry is None:
        reg = importlib.import_module("traiNNer.utils.registry")
        loss_registry = reg.LOSS_REGISTRY if loss_registry is None else loss_registry
        metric_registry = reg.METRIC_REGISTRY if metric_registry is None else metric_registry
    for registry, obj in (
        (loss_registry, TOPIQLoss),
        (loss_registry, LPIPSPlusLoss),
        (metric_registry, calculate_topiq_metric),
        (metric_registry, calculate_topiq_nr_metric),
    ):
        if obj.__name__.lower() in registry:
            if registry.get(obj.__name__) is not obj:
                raise ValueError(
                    f"traiNNer-redux already has a {obj.__name__.lower()!r} that is not topiq_loss's; "
                    "remove the other registration"
                )
            continue
        registry.register(obj)
        _log.debug("registered %s in traiNNer-redux", obj.__name__.lower())
