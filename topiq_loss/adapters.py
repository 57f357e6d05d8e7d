"""Ready-made losses for restoration training: super-resolution and denoising (GANs: :mod:`topiq_loss.gan`).

Each adapter mixes a pixel term with the TOPIQ term by plain weights and exposes
``terms(...)`` (a dict of the unweighted parts, for logging) beside ``forward``.
All take a :class:`~topiq_loss.TOPIQLoss` via ``topiq=`` so one frozen network can be
shared, or build one from ``weights=`` and the other TOPIQLoss options.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
import torch.nn as nn

from . import _checks
from .functional import Reduction, reduce_loss
from .loss import TOPIQLoss
from .loss_nr import TOPIQNRLoss
from .lpips_loss import LPIPSLoss, LPIPSPlusLoss
from .objectives import Objective, check_objective
from .weights import DEFAULT_NR_WEIGHTS

__all__ = ["DenoiseLoss", "SRLoss", "pixel_loss"]

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
    # Random TOPIQ weights (tests) make a random NR term too, rather than a koniq download.
    weights = nr if nr is not None else (None if random else DEFAULT_NR_WEIGHTS)
    return TOPIQNRLoss(weights=weights, reduction="none", objective=objective)


class _MixedLoss(nn.Module):
    """``pixel_weight * pixel + topiq_weight * topiq + nr_weight * nr``; subclasses
    choose what is compared."""

    def __init__(
        self,
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
        # LPIPS+ (the TOPIQ paper's semantic-weighted LPIPS) by default: a distance, 0 at the target.
        self.lpips = lpips if lpips is not None or self.lpips_weight == 0 else LPIPSPlusLoss(reduction="none")
        self.reduction = _checks.check_reduction(reduction)
        # Submodules: they keep their networks out of state_dict()/parameters() themselves.
        self.topiq = _topiq_from(topiq, topiq_kwargs, objective)
        random = topiq_kwargs.get("weights", "") in (None, "random")
        self.nr = _nr_from(nr, self.nr_weight, self.topiq.objective, random)

    def _mix(
        self, pred: torch.Tensor, target: torch.Tensor, names: tuple[str, str] = ("pred", "target")
    ) -> dict[str, torch.Tensor]:
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
            images = [(pred, names[0]), (target, names[1])]
            _checks.check_values(images, total, f"`{names[0]}` and `{names[1]}`", self.topiq.input_range,
                                 owner=self.topiq.net)
        terms = {k: reduce_loss(v, self.reduction) for k, v in terms.items()}
        terms["total"] = reduce_loss(total, self.reduction)
        return terms

    #: A loss: lower is better (the torchmetrics attribute frameworks check).
    higher_is_better = False

    def train(self, mode: bool = True) -> _MixedLoss:
        """No-op: holds only the frozen TOPIQ network, which stays in eval mode."""
        return super().train(False)


class SRLoss(_MixedLoss):
    """Super-resolution loss: pixel (L1 / Charbonnier / MSE) + TOPIQ, for x``scale`` models.

    The target is cropped when its size differs from the output's by less than
    ``scale`` pixels (an HR image whose size is not a multiple of ``scale``);
    larger mismatches raise. With ``shave=True``, ``scale`` pixels are removed on
    every border of both before comparing, as SR benchmarks do.

    Args:
        scale: the upscaling factor (>= 1).
        pixel: ``"l1"`` (default), ``"charbonnier"``, ``"mse"`` or ``None`` (no pixel term).
        pixel_weight: weight of the pixel term (>= 0).
        topiq_weight: weight of the TOPIQ term (>= 0).
        shave: crop ``scale`` border pixels before both terms.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        topiq: a :class:`TOPIQLoss` to share; else one is built from ``topiq_kwargs``
            (``weights=``, ``input_range=``, ``checkpoint=``, ...).
        nr_weight: weight of an optional no-reference term on ``sr`` alone
            (:class:`TOPIQNRLoss`, 0 = best), default 0 (off).
        nr: a :class:`TOPIQNRLoss` to share, or NR weights (``"koniq"``, a path) to
            build one; with ``nr_weight > 0`` and no ``nr``, koniq is used (random
            weights when the TOPIQ weights are random).
        objective: ``"anchored"`` (the default when the TOPIQ loss is built here):
            the TOPIQ and NR terms are 0 with a zero gradient at ``sr == hr``, so with an
            L1 pixel term ``SRLoss(...)(hr, hr)`` is 0; ``"score"``: the published
            scores as losses (not minimised at the target). ``None`` with ``topiq=``
            takes that loss's objective. See :func:`~topiq_loss.topiq_fr_loss`.
        lpips_weight: weight of an optional LPIPS term (a distance, 0 at ``hr``), default 0.
        lpips: the :class:`~topiq_loss.LPIPSLoss` / :class:`~topiq_loss.LPIPSPlusLoss` to
            use; with ``lpips_weight > 0`` and none given, ``LPIPSPlusLoss()`` (AlexNet,
            the TOPIQ paper's semantic weighting) is built.

    Shape:
        - sr: (N, C, H, W) network output, C in (1, 3), values in ``input_range``.
        - hr: (N, C, H', W') with 0 <= |H' - H|, |W' - W| < scale.
        - Output: scalar, or (N,) with ``reduction="none"``.

    Example:
        >>> loss_fn = SRLoss(scale=4, pixel="charbonnier", topiq_weight=0.1)  # doctest: +SKIP
        >>> loss = loss_fn(net(lr), hr)  # doctest: +SKIP
    """

    def __init__(
        self,
        scale: int,
        pixel: PixelKind | None = "l1",
        pixel_weight: float = 1.0,
        topiq_weight: float = 1.0,
        shave: bool = False,
        reduction: Reduction = "mean",
        topiq: TOPIQLoss | None = None,
        nr_weight: float = 0.0,
        nr: TOPIQNRLoss | str | os.PathLike[str] | None = None,
        objective: Objective | None = None,
        lpips_weight: float = 0.0,
        lpips: LPIPSLoss | None = None,
        **topiq_kwargs: Any,
    ) -> None:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"`scale` must be an integer >= 1; got {scale!r}")
        super().__init__(
            pixel, pixel_weight, topiq_weight, reduction, topiq, topiq_kwargs, nr_weight, nr, objective,
            lpips_weight, lpips,
        )
        self.scale = scale
        self.shave = _checks.check_bool(shave, "shave")

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, pixel={self.pixel!r}, pixel_weight={self.pixel_weight}, "
            f"topiq_weight={self.topiq_weight}, nr_weight={self.nr_weight}, shave={self.shave}, "
            f"reduction={self.reduction!r}"
        )

    def align(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops of ``sr`` and ``hr`` that are compared (rounding crop, then shave)."""
        for name, x in (("sr", sr), ("hr", hr)):
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"`{name}` must be a (N, C, H, W) tensor; got {got}")
        if sr.shape[:2] != hr.shape[:2]:
            raise ValueError(
                f"`sr` and `hr` must have the same batch size and channels; got "
                f"{tuple(sr.shape)} and {tuple(hr.shape)}"
            )
        dh, dw = hr.shape[-2] - sr.shape[-2], hr.shape[-1] - sr.shape[-1]
        if abs(dh) >= self.scale or abs(dw) >= self.scale:
            raise ValueError(
                f"`sr` {tuple(sr.shape)} and `hr` {tuple(hr.shape)} differ by more than the "
                f"rounding of scale={self.scale} allows (< {self.scale} pixels per side)"
            )
        h, w = min(sr.shape[-2], hr.shape[-2]), min(sr.shape[-1], hr.shape[-1])
        sr, hr = sr[..., :h, :w], hr[..., :h, :w]
        if self.shave:
            s = self.scale
            if h - 2 * s < _checks.MIN_SIZE or w - 2 * s < _checks.MIN_SIZE:
                raise ValueError(
                    f"patches are {h}x{w}; after shaving {s} border pixels (shave=True, "
                    f"scale={s}) they are {h - 2 * s}x{w - 2 * s}, but TOPIQ needs at least "
                    f"{_checks.MIN_SIZE}x{_checks.MIN_SIZE}: use patches of at least "
                    f"{_checks.MIN_SIZE + 2 * s} pixels or shave=False"
                )
            sr, hr = sr[..., s:-s, s:-s], hr[..., s:-s, s:-s]
        return sr, hr

    def terms(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"pixel", "topiq", ["nr",] "total"}`` (unweighted parts, weighted total), reduced."""
        return self._mix(*self.align(sr, hr))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Weighted loss of the SR output ``sr`` against the ground truth ``hr``."""
        return self.terms(sr, hr)["total"]


class DenoiseLoss(_MixedLoss):
    """Denoising loss: pixel + TOPIQ on the clean estimate.

    A denoiser predicts either the clean image (``predicts="clean"``) or the noise
    residual (``predicts="residual"``, DnCNN-style), in which case the clean
    estimate is ``noisy - output`` and ``noisy`` must be given.

    Args:
        predicts: ``"clean"`` or ``"residual"``.
        pixel: as :class:`SRLoss`.
        pixel_weight: as :class:`SRLoss`.
        topiq_weight: as :class:`SRLoss`.
        reduction: as :class:`SRLoss`.
        topiq: as :class:`SRLoss`.
        objective: as :class:`SRLoss` (anchored by default: 0 at ``clean``).
        **topiq_kwargs: TOPIQLoss options, as :class:`SRLoss`.

    Shape:
        - output, clean, noisy: (N, C, H, W), same shape, H, W >= 32.
        - Output: scalar, or (N,) with ``reduction="none"``.
    """

    def __init__(
        self,
        predicts: Literal["clean", "residual"] = "clean",
        pixel: PixelKind | None = "l1",
        pixel_weight: float = 1.0,
        topiq_weight: float = 1.0,
        reduction: Reduction = "mean",
        topiq: TOPIQLoss | None = None,
        objective: Objective | None = None,
        **topiq_kwargs: Any,
    ) -> None:
        predicts_ = _checks.check_choice(predicts, "predicts", ("clean", "residual"))
        super().__init__(pixel, pixel_weight, topiq_weight, reduction, topiq, topiq_kwargs, objective=objective)
        self.predicts = predicts_

    def extra_repr(self) -> str:
        return (
            f"predicts={self.predicts!r}, pixel={self.pixel!r}, pixel_weight={self.pixel_weight}, "
            f"topiq_weight={self.topiq_weight}, reduction={self.reduction!r}"
        )

    def estimate(self, output: torch.Tensor, noisy: torch.Tensor | None = None) -> torch.Tensor:
        """The clean-image estimate: ``output``, or ``noisy - output`` for residual models."""
        if self.predicts == "clean":
            return output
        if noisy is None:
            raise ValueError("`noisy` is required with predicts='residual' (clean = noisy - output)")
        if not isinstance(noisy, torch.Tensor) or noisy.shape != output.shape:
            got = tuple(noisy.shape) if isinstance(noisy, torch.Tensor) else type(noisy).__name__
            raise ValueError(f"`noisy` must have the shape of `output` {tuple(output.shape)}; got {got}")
        return noisy - output

    def terms(
        self, output: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"pixel", "topiq", "total"}`` (unweighted parts, weighted total), reduced."""
        est = self.estimate(output, noisy)
        _checks.check_pair(est, clean, pred_name="output", target_name="clean", values=False)
        return self._mix(est, clean, ("output", "clean"))

    def forward(
        self, output: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weighted loss of the denoiser's ``output`` against the ``clean`` image."""
        return self.terms(output, clean, noisy)["total"]
