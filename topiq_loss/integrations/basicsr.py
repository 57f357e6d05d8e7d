"""BasicSR plug: the TOPIQ loss and metrics in BasicSR's registries, and a train entry point.

``import topiq_loss.integrations.basicsr`` registers ``BasicSRTOPIQLoss`` and
``BasicSRLPIPSPlusLoss`` in
``LOSS_REGISTRY`` and ``calculate_topiq`` / ``calculate_topiq_nr`` in
``METRIC_REGISTRY`` when basicsr is importable (topiq_loss never depends on it).
``python -m topiq_loss.integrations.basicsr -opt train.yml`` registers them and runs
BasicSR's ``train_pipeline`` with the current directory as root (``experiments/``
is created there), so a YAML naming them needs no hand-written ``train.py``.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, removed in
torchvision 0.17. With ``TOPIQ_LOSS_BASICSR_COMPAT=1`` in the environment, that name
is aliased to ``torchvision.transforms.functional`` (same ``rgb_to_grayscale``) in
``sys.modules`` before basicsr is imported; nothing on disk is changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import warnings
from typing import Any

import torch
import torch.nn as nn

from .. import _checks
from ..functional.fr import Reduction, reduce_loss
from ..functional.objectives import Objective, check_objective
from ..functional.robust import RandomTransforms
from ..losses.fr import TOPIQLoss
from ..weights.env import env_value
from ..weights.registry import DEFAULT_WEIGHTS
from ._common import LPIPSPlusPlug, check_count, check_plug_options
from .basicsr_metrics import calculate_topiq, calculate_topiq_nr

__all__ = [
    "COMPAT_ENV",
    "BasicSRLPIPSPlusLoss",
    "BasicSRTOPIQLoss",
    "calculate_topiq",
    "calculate_topiq_nr",
    "import_basicsr",
    "main",
    "register_basicsr",
]

_log = logging.getLogger(__name__)

#: Environment variable: ``1`` aliases the module basicsr 1.4.2 needs from old torchvision.
COMPAT_ENV = "TOPIQ_LOSS_BASICSR_COMPAT"
_OLD_TV = "torchvision.transforms.functional_tensor"
_FIX = (
    f"basicsr imports {_OLD_TV}, which torchvision 0.17+ removed: set {COMPAT_ENV}=1 "
    "(topiq_loss then aliases it to torchvision.transforms.functional before importing basicsr)"
)


def per_sample_weighted(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``values`` (N,) times BasicSR's optional ``weight``, which must be per sample: a
    whole-image loss has no per-pixel meaning."""
    if weight is None:
        return values
    if not isinstance(weight, torch.Tensor) or weight.numel() not in (1, values.numel()):
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(
            f"`weight` must be None or per-sample weights with {values.numel()} elements "
            f"(e.g. shape ({values.numel()}, 1, 1, 1)); got {got}"
        )
    _checks.check_finite(weight, "weight")
    return values * weight.reshape(-1).to(values)


class BasicSRTOPIQLoss(nn.Module):
    """TOPIQ-FR loss with BasicSR's loss signature and options.

    Args:
        loss_weight: multiplies the loss (BasicSR convention).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        weights: ``"kadid"`` | ``"pipal"`` | checkpoint path | ``"random"`` (tests only).
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
        **kwargs: refused, listing the valid options (a typo must not train with the defaults).

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
        **kwargs: Any,
    ) -> None:
        check_plug_options(type(self), kwargs)  # before a network is built
        super().__init__()
        objective = None if objective is None else check_objective(objective)
        robust_samples = check_count(robust_samples, "robust_samples")
        checkpoint = _checks.check_bool(checkpoint, "checkpoint")  # every option before a build
        self.loss_weight = _checks.check_loss_weight(loss_weight)
        self.reduction = _checks.check_reduction(reduction)
        self.as_perceptual = _checks.check_bool(as_perceptual, "as_perceptual")
        if topiq is None:
            robust_opt = RandomTransforms(samples=robust_samples) if _checks.check_bool(robust, "robust") else False
            topiq = TOPIQLoss(
                weights=weights,
                input_range=_checks.check_input_range(input_range),
                robust=robust_opt,
                objective=objective or "anchored",
            ).set_grad_checkpointing(checkpoint)
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
        loss = self.loss_weight * reduce_loss(per_sample_weighted(values, weight), self.reduction)
        return (loss, None) if self.as_perceptual else loss


class BasicSRLPIPSPlusLoss(LPIPSPlusPlug):
    """LPIPS+ loss (the TOPIQ paper's semantic-weighted LPIPS, :class:`~topiq_loss.LPIPSPlusLoss`)
    with BasicSR's loss signature: a distance, 0 at the target.

    Args: as :class:`~topiq_loss.integrations._common.LPIPSPlusPlug` (``loss_weight``,
    ``net``, ``weights``, ``semantic_layer``, ``input_range``, ``checkpoint``, ``lpips``),
    plus ``reduction`` and ``as_perceptual`` as for :class:`BasicSRTOPIQLoss`. Runs in
    float32 with autocast off; inputs under 32 pixels are enlarged.

    Shape:
        - pred, target: (N, C, H, W), C in (1, 3).
        - weight: None, or per-sample weights broadcastable to (N,).
    """

    higher_is_better = False

    def __init__(self, *args: Any, reduction: Reduction = "mean", as_perceptual: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reduction = _checks.check_reduction(reduction)
        self.as_perceptual = _checks.check_bool(as_perceptual, "as_perceptual")

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, None]:
        loss = self.loss_weight * reduce_loss(per_sample_weighted(self.loss_values(pred, target), weight), self.reduction)
        return (loss, None) if self.as_perceptual else loss


def _install_compat_alias() -> None:
    if _OLD_TV in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    try:
        importlib.import_module(_OLD_TV)
    except ImportError:
        sys.modules[_OLD_TV] = importlib.import_module("torchvision.transforms.functional")


def _compat_flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise ValueError(f"must be '1' (install the torchvision alias) or '0' / unset (do not); got {value!r}")
    return value == "1"


def import_basicsr() -> bool:
    """Import basicsr (with the compat alias when ``TOPIQ_LOSS_BASICSR_COMPAT=1``).

    Returns False if basicsr is not installed, or is installed but fails to import
    (then warns with the reason, and the fix for the torchvision break).

    Raises:
        ValueError: ``TOPIQ_LOSS_BASICSR_COMPAT`` is set to anything but ``0`` or ``1``.
    """
    if env_value(COMPAT_ENV, _compat_flag):
        _install_compat_alias()
    try:
        importlib.import_module("basicsr.utils.registry")
    except ImportError as exc:
        if importlib.util.find_spec("basicsr") is not None:
            # Installed but broken: say so now rather than let build_loss fail later with "not found".
            hint = _FIX if "functional_tensor" in str(exc) else ""
            warnings.warn(
                f"basicsr is installed but could not be imported ({exc}); topiq_loss did not register "
                f"in its registries. {hint}".rstrip(),
                RuntimeWarning,
                stacklevel=3,
            )
        return False
    return True


def _register(registry: Any, obj: Any) -> None:
    if obj.__name__ not in registry:  # BasicSR's Registry refuses a second registration
        registry.register(obj)
        _log.debug("registered %s in %s", obj.__name__, registry)


def register_basicsr(registry: Any | None = None, metric_registry: Any | None = None) -> bool:
    """Add :class:`BasicSRTOPIQLoss` and :class:`BasicSRLPIPSPlusLoss` to BasicSR's ``LOSS_REGISTRY`` and
    :func:`calculate_topiq` / :func:`calculate_topiq_nr` to its ``METRIC_REGISTRY``
    (or to the registries given). Returns True once registered (now or before),
    False if basicsr is not importable."""
    if registry is None or metric_registry is None:
        if not import_basicsr():
            return False
        from basicsr.utils.registry import LOSS_REGISTRY, METRIC_REGISTRY

        registry = LOSS_REGISTRY if registry is None else registry
        metric_registry = METRIC_REGISTRY if metric_registry is None else metric_registry
    _register(registry, BasicSRTOPIQLoss)
    _register(registry, BasicSRLPIPSPlusLoss)
    _register(metric_registry, calculate_topiq)
    _register(metric_registry, calculate_topiq_nr)
    return True


def main(argv: list[str] | None = None) -> None:
    """``python -m topiq_loss.integrations.basicsr -opt X.yml [BasicSR's train options]``."""
    if argv is not None:
        sys.argv[1:] = argv
    if not register_basicsr():
        if importlib.util.find_spec("basicsr") is None:
            raise SystemExit("basicsr is not installed: `pip install basicsr`")
        raise SystemExit("basicsr could not be imported (see the warning above)")
    from basicsr.train import train_pipeline

    train_pipeline(os.getcwd())


register_basicsr()

if __name__ == "__main__":
    main()
