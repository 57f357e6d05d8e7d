"""neosr plug: a TOPIQ loss and metrics in its registries.

neosr imports every ``neosr/losses/*_loss.py`` and looks classes up by their exact
(lower-snake) name, so a file ``neosr/losses/topiq_loss_loss.py`` holding::

    from topiq_loss.integrations.neosr import register

    register()

makes ``type = "topiq_loss"`` and ``type = "lpips_plus_loss"`` (for the
``perceptual_opt`` or ``dists_opt`` slot)
and ``type = "calculate_topiq_metric"`` / ``"calculate_topiq_nr_metric"`` available
in its TOML. neosr losses return the weighted loss and run in float32.

neosr 1.0.0 logs the mean of a validation metric as ``sum / (n - 1) + 1``, not
``sum / n``; the two metrics here keep their own count and sum of the per-image scores
of the current validation round (:data:`VALIDATION_MEANS`, :func:`validation_mean`)
and log the true running mean at INFO with every score, through neosr's own logger
(``neosr``, the one with its console and file handlers) when neosr has set it up.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
import sys
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn

from .. import _checks
from ..functional.objectives import Objective, check_objective
from ..losses.fr import TOPIQLoss
from ..weights.registry import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS
from ._common import LPIPSPlusPlug, as_float32, check_plug_options, numpy_image, score_fr, score_nr, upsample_to_min

__all__ = [
    "VALIDATION_MEANS",
    "ValidationMean",
    "calculate_topiq_metric",
    "calculate_topiq_nr_metric",
    "lpips_plus_loss",
    "register",
    "reset_validation_means",
    "topiq_loss",
    "validation_mean",
]

_log = logging.getLogger(__name__)


class topiq_loss(nn.Module):  # noqa: N801 (neosr's registry names losses in lower snake case)
    """TOPIQ-FR loss for neosr (``type = "topiq_loss"``); returns ``loss_weight * loss``.

    Runs in float32 with autocast off, as neosr's losses do. Images with a side under
    32 pixels are enlarged bilinearly (both alike, aspect kept) to a short side of 32.

    Args:
        loss_weight: multiplies the loss.
        weights: ``"kadid"`` (default), ``"pipal"``, a checkpoint path or ``"random"`` (tests only).
        objective: ``"anchored"`` (default; 0 at the target) or ``"score"``.
        input_range: (low, high) of pixel values.
        checkpoint: gradient checkpointing (less memory).
        topiq: a prebuilt :class:`~topiq_loss.TOPIQLoss` to use instead.
        **kwargs: refused, listing the valid options (a typo must not train with the defaults).

    Shape:
        - pred, target: (N, C, H, W), C in (1, 3). Output: scalar.
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        weights: str | os.PathLike[str] = DEFAULT_WEIGHTS,
        objective: Objective = "anchored",
        input_range: tuple[float, float] = (0.0, 1.0),
        checkpoint: bool = False,
        topiq: TOPIQLoss | None = None,
        **kwargs: Any,
    ) -> None:
        check_plug_options(type(self), kwargs)  # before a network is built
        super().__init__()
        self.loss_weight = _checks.check_loss_weight(loss_weight)
        if topiq is not None and not isinstance(topiq, TOPIQLoss):
            raise TypeError(f"`topiq` must be a TOPIQLoss or None; got {type(topiq).__name__}")
        checkpoint = _checks.check_bool(checkpoint, "checkpoint")  # every option before a build
        if topiq is None:
            topiq = TOPIQLoss(
                weights=weights, objective=check_objective(objective),
                input_range=_checks.check_input_range(input_range),
            ).set_grad_checkpointing(checkpoint)
        self.topiq = topiq

    def train(self, mode: bool = True) -> topiq_loss:
        return super().train(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return as_float32(self._loss)(pred, target)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = upsample_to_min(pred, target)
        return self.loss_weight * self.topiq.loss_values(pred, target).mean()


class lpips_plus_loss(LPIPSPlusPlug):  # noqa: N801 (neosr's naming)
    """LPIPS+ loss for neosr (``type = "lpips_plus_loss"``); returns ``loss_weight * loss``.

    The TOPIQ paper's semantic-weighted LPIPS (:class:`~topiq_loss.LPIPSPlusLoss`): a
    distance, 0 at the target; float32 with autocast off, inputs under 32 pixels enlarged.
    Args: ``loss_weight``, ``net`` (``"alex"`` | ``"vgg"``), ``weights`` (``"default"`` |
    path | ``"random"``), ``semantic_layer`` (2), ``input_range``, ``checkpoint``, ``lpips`` (prebuilt);
    see :class:`~topiq_loss.integrations._common.LPIPSPlusPlug`.

    Shape:
        - pred, target: (N, C, H, W), C in (1, 3). Output: scalar.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.loss_weight * self.loss_values(pred, target).mean()


@dataclass
class ValidationMean:
    """Count and sum of one metric's per-image scores in the current validation round.

    Inside neosr's validation loop the round is neosr's own: a new round starts when
    neosr starts validating again (another iteration or data set) or its image index goes
    back. Called from anywhere else, a round ends where a reference image already seen in
    it comes again; scores given without a reference keep adding.
    """

    count: int = 0
    total: float = 0.0
    _seen: set[bytes] = field(default_factory=set, repr=False)
    _round: Hashable | None = field(default=None, repr=False)
    _index: int | None = field(default=None, repr=False)

    @property
    def mean(self) -> float:
        """``total / count``; NaN before any score."""
        return self.total / self.count if self.count else math.nan

    def add(
        self, score: float, reference: Any = None, round_key: Hashable | None = None, index: int | None = None
    ) -> None:
        """Count ``score``. ``round_key`` and ``index`` (the validation round and the
        image's place in it) tell the rounds apart; without them, ``reference`` (a numpy
        image) does."""
        if round_key is not None:
            went_back = index is not None and self._index is not None and index < self._index
            if round_key != self._round or went_back:
                self.reset()
            self._round, self._index = round_key, index
        elif isinstance(reference, np.ndarray):
            key = hashlib.blake2b(np.ascontiguousarray(reference).tobytes(), digest_size=16)
            key.update(repr((reference.shape, reference.dtype.str)).encode())
            digest = key.digest()
            if digest in self._seen:
                self.reset()
            self._seen.add(digest)
        self.count += 1
        self.total += score

    def reset(self) -> None:
        """Forget every score (and reference, and round) seen."""
        self.count, self.total = 0, 0.0
        self._seen.clear()
        self._round = self._index = None


#: The running validation mean of each metric of this plug, by its neosr name.
VALIDATION_MEANS: dict[str, ValidationMean] = {
    "calculate_topiq_metric": ValidationMean(),
    "calculate_topiq_nr_metric": ValidationMean(),
}


def validation_mean(metric: str = "calculate_topiq_metric") -> float:
    """The true mean of ``metric``'s scores in the current (or last) validation round:
    what neosr 1.0.0's logged ``sum / (n - 1) + 1`` should have been. NaN before any."""
    if metric not in VALIDATION_MEANS:
        raise ValueError(f"`metric` must be one of {sorted(VALIDATION_MEANS)}; got {metric!r}")
    return VALIDATION_MEANS[metric].mean


def reset_validation_means() -> None:
    """Start every metric's running mean afresh."""
    for tally in VALIDATION_MEANS.values():
        tally.reset()


#: neosr's logger (``neosr.utils.get_root_logger``): it holds neosr's console and file
#: handlers and does not propagate, so lines logged anywhere else never reach its user.
NEOSR_LOGGER = "neosr"
#: The method of neosr's models that runs one validation round (its name through neosr's history).
_VALIDATION_LOOP = "nondist_validation"
_warned_no_console = False


def _validation_round() -> tuple[Hashable, int | None] | None:
    """(round, image index) read from neosr's validation loop on the call stack, or None
    when not called from it. The round is the validation's iteration and data loader."""
    try:
        frame = sys._getframe(2)
    except ValueError:  # a shallower stack: not neosr's loop
        return None
    for _ in range(32):
        if frame is None:
            return None
        if frame.f_code.co_name == _VALIDATION_LOOP:
            local = frame.f_locals
            index = local.get("_idx", local.get("idx"))
            return (local.get("current_iter"), id(local.get("dataloader"))), index if isinstance(index, int) else None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _console() -> logging.Logger:
    """neosr's own logger (a child of it) once neosr has set it up, else this module's."""
    global _warned_no_console
    if logging.getLogger(NEOSR_LOGGER).handlers:
        return logging.getLogger(NEOSR_LOGGER).getChild("topiq_loss")
    if not _warned_no_console:
        _warned_no_console = True
        _log.warning(
            "neosr's logger %r has no handler yet: the true validation means of topiq_loss's metrics are "
            "logged at INFO on %r (or read topiq_loss.integrations.neosr.validation_mean())",
            NEOSR_LOGGER, _log.name,
        )
    return _log


def _tally(metric: str, score: float, reference: Any, where: tuple[Hashable, int | None] | None) -> float:
    tally = VALIDATION_MEANS[metric]
    round_key, index = where if where is not None else (None, None)
    tally.add(score, reference, round_key, index)
    _console().info(
        "%s: %.4f; true running mean %.4f over %d images",
        metric, score, tally.mean, tally.count,
    )
    return score


def calculate_topiq_metric(
    img: Any,
    img2: Any,
    crop_border: int = 0,
    weights: str | os.PathLike[str] = DEFAULT_WEIGHTS,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> float:
    """TOPIQ-FR score of ``img`` against ``img2``, higher is better (neosr metric).

    Args:
        img, img2: neosr's ``tensor2img`` outputs: (H, W, C) numpy arrays in BGR order,
            values 0..255.
        crop_border: pixels dropped at each edge first.
        weights: ``"kadid"`` (default), ``"pipal"``, a checkpoint path or ``"random"`` (tests only).
        device: default CUDA when available, else the CPU.

    Each score also goes into :func:`validation_mean` (logged at INFO).
    """
    x = numpy_image(img, "img", crop_border=crop_border, bgr=True)
    y = numpy_image(img2, "img2", crop_border=crop_border, bgr=True)
    return _tally("calculate_topiq_metric", score_fr(x, y, weights, device), img2, _validation_round())


def calculate_topiq_nr_metric(
    img: Any,
    crop_border: int = 0,
    weights: str | os.PathLike[str] = DEFAULT_NR_WEIGHTS,
    resize: int | None | Literal["auto"] = "auto",
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> float:
    """No-reference TOPIQ score of ``img`` (neosr metric; ``img2``, when neosr passes
    it, only tells the validation rounds of :func:`validation_mean` apart)."""
    score = score_nr(numpy_image(img, "img", crop_border=crop_border, bgr=True), weights, device, resize)
    return _tally("calculate_topiq_nr_metric", score, kwargs.get("img2"), _validation_round())


def register(loss_registry: Any | None = None, metric_registry: Any | None = None) -> None:
    """Add :class:`topiq_loss`, :class:`lpips_plus_loss` and the two metrics to neosr's
    registries (or to those given); registering twice is a no-op."""
    if loss_registry is None or metric_registry is None:
        reg = importlib.import_module("neosr.utils.registry")
        loss_registry = reg.LOSS_REGISTRY if loss_registry is None else loss_registry
        metric_registry = reg.METRIC_REGISTRY if metric_registry is None else metric_registry
    for registry, obj in (
        (loss_registry, topiq_loss),
        (loss_registry, lpips_plus_loss),
        (metric_registry, calculate_topiq_metric),
        (metric_registry, calculate_topiq_nr_metric),
    ):
        if obj.__name__ in registry:
            if registry.get(obj.__name__) is not obj:
                raise ValueError(f"neosr already has a {obj.__name__!r} that is not topiq_loss's")
            continue
        registry.register(obj)
        _log.debug("registered %s in neosr", obj.__name__)
