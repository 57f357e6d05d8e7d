"""Ready-made losses for restoration training: super-resolution and denoising (GANs: :mod:`topiq_loss.training.gan`).

Each adapter mixes a pixel term with the TOPIQ term by plain weights and exposes
``terms(...)`` (a dict of the unweighted parts, for logging) beside ``forward``.
All take a :class:`~topiq_loss.TOPIQLoss` via ``topiq=`` so one frozen network can be
shared, or build one from ``weights=`` and the other TOPIQLoss options.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch

from .. import _checks
from ..functional.fr import Reduction
from ..functional.objectives import Objective
from ..losses.fr import TOPIQLoss
from ..losses.lpips import LPIPSLoss
from ..losses.nr import TOPIQNRLoss
from .mixing import MixedLoss, PixelKind, pixel_loss

__all__ = ["DenoiseLoss", "SRLoss", "pixel_loss"]


class SRLoss(MixedLoss):
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
            the TOPIQ paper's semantic weighting) is built (random weights when the TOPIQ
            weights are random, as for ``nr``).

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
            pixel=pixel, pixel_weight=pixel_weight, topiq_weight=topiq_weight, reduction=reduction, topiq=topiq,
            topiq_kwargs=topiq_kwargs, nr_weight=nr_weight, nr=nr, objective=objective, lpips_weight=lpips_weight,
            lpips=lpips,
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
            _checks.check_layout(x, name)
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
        return self._mix(*self.align(sr, hr), ("sr", "hr"))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Weighted loss of the SR output ``sr`` against the ground truth ``hr``."""
        return self.terms(sr, hr)["total"]


class DenoiseLoss(MixedLoss):
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
        super().__init__(
            pixel=pixel, pixel_weight=pixel_weight, topiq_weight=topiq_weight, reduction=reduction, topiq=topiq,
            topiq_kwargs=topiq_kwargs, objective=objective,
        )
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
        _checks.check_layout(noisy, "noisy")
        return noisy - output

    def terms(
        self, output: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"pixel", "topiq", "total"}`` (unweighted parts, weighted total), reduced."""
        est = self.estimate(output, noisy)
        _checks.check_pair(est, clean, pred_name="output", target_name="clean", values=False)
        inputs = [(output, "output"), (clean, "clean")]
        if noisy is not None and est is not output:
            inputs.append((noisy, "noisy"))
        return self._mix(est, clean, ("output", "clean"), inputs)

    def forward(
        self, output: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weighted loss of the denoiser's ``output`` against the ``clean`` image."""
        return self.terms(output, clean, noisy)["total"]
