"""GAN generator and discriminator objectives beside the TOPIQ and pixel terms (ESRGAN-style)."""

from __future__ import annotations

import os
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .. import _checks
from ..functional.objectives import Objective
from ..losses.fr import TOPIQLoss
from ..losses.lpips import LPIPSLoss
from ..losses.nr import TOPIQNRLoss
from .mixing import MixedLoss, PixelKind

__all__ = ["GeneratorLoss", "adversarial_d_loss", "adversarial_g_loss"]

AdversarialKind = Literal["nsgan", "hinge", "ragan"]
ADVERSARIAL_KINDS = ("nsgan", "hinge", "ragan")


def _check_logits(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        got = f"dtype {x.dtype}, shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"`{name}` must be a non-empty floating-point tensor of raw logits; got {got}")
    _checks.check_finite(x, name)
    return x


def adversarial_g_loss(
    fake_logits: torch.Tensor,
    real_logits: torch.Tensor | None = None,
    kind: AdversarialKind = "nsgan",
) -> torch.Tensor:
    """Generator's adversarial loss from raw discriminator logits (scalar).

    - ``"nsgan"``: non-saturating, ``softplus(-D(fake))``.
    - ``"hinge"``: ``-D(fake)``.
    - ``"ragan"``: relativistic average (ESRGAN): the mean of
      ``BCE(D(real) - E[D(fake)], 0)`` and ``BCE(D(fake) - E[D(real)], 1)``; needs
      ``real_logits`` (detach them in the generator step, as ESRGAN does).
    """
    kind = _checks.check_choice(kind, "kind", ADVERSARIAL_KINDS)  # type: ignore[assignment]
    fake = _check_logits(fake_logits, "fake_logits")
    if kind == "nsgan":
        return F.softplus(-fake).mean()
    if kind == "hinge":
        return -fake.mean()
    if real_logits is None:
        raise ValueError("`real_logits` is required for kind='ragan' (relativistic average)")
    real = _check_logits(real_logits, "real_logits")
    # BCE-with-logits against 0 is softplus(x), against 1 softplus(-x).
    return 0.5 * (F.softplus(real - fake.mean()).mean() + F.softplus(-(fake - real.mean())).mean())


def adversarial_d_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: AdversarialKind = "nsgan"
) -> torch.Tensor:
    """Discriminator's loss matching :func:`adversarial_g_loss` (scalar).

    Pass ``fake_logits`` computed on detached generator outputs.
    """
    kind = _checks.check_choice(kind, "kind", ADVERSARIAL_KINDS)  # type: ignore[assignment]
    real = _check_logits(real_logits, "real_logits")
    fake = _check_logits(fake_logits, "fake_logits")
    if kind == "nsgan":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return 0.5 * (F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean())


class GeneratorLoss(MixedLoss):
    """GAN generator objective: pixel + TOPIQ + adversarial, with named terms for logging.

    Defaults follow ESRGAN's weights (pixel 1e-2, perceptual 1, adversarial 5e-3).

    Args:
        adversarial: ``"nsgan"`` | ``"hinge"`` | ``"ragan"`` (see :func:`adversarial_g_loss`).
        adversarial_weight: weight of the adversarial term (>= 0).
        pixel: as :class:`SRLoss`.
        pixel_weight: as :class:`SRLoss`.
        topiq_weight: as :class:`SRLoss`.
        topiq: as :class:`SRLoss`.
        nr_weight: as :class:`SRLoss`.
        nr: as :class:`SRLoss`.
        objective: as :class:`SRLoss`.
        lpips_weight: as :class:`SRLoss`.
        lpips: as :class:`SRLoss`.
        **topiq_kwargs: TOPIQLoss options, as :class:`SRLoss`. The batch reduction is
            always the mean (adversarial terms are batch means).

    Returns (forward):
        ``(total, terms)``: the weighted sum (scalar, to backpropagate) and a dict of
        detached unweighted terms ``"pixel"``, ``"topiq"``, ``"adversarial"`` and
        ``"total"``, ready for a logger.

    Example:
        >>> g_loss = GeneratorLoss("ragan")  # doctest: +SKIP
        >>> total, logs = g_loss(fake, real, d(fake), d(real).detach())  # doctest: +SKIP
    """

    def __init__(
        self,
        adversarial: AdversarialKind = "nsgan",
        adversarial_weight: float = 5e-3,
        pixel: PixelKind | None = "l1",
        pixel_weight: float = 1e-2,
        topiq_weight: float = 1.0,
        topiq: TOPIQLoss | None = None,
        nr_weight: float = 0.0,
        nr: TOPIQNRLoss | str | os.PathLike[str] | None = None,
        objective: Objective | None = None,
        lpips_weight: float = 0.0,
        lpips: LPIPSLoss | None = None,
        **topiq_kwargs: Any,
    ) -> None:
        adv = _checks.check_choice(adversarial, "adversarial", ADVERSARIAL_KINDS)
        super().__init__(
            pixel=pixel, pixel_weight=pixel_weight, topiq_weight=topiq_weight, reduction="mean", topiq=topiq,
            topiq_kwargs=topiq_kwargs, nr_weight=nr_weight, nr=nr, objective=objective, lpips_weight=lpips_weight,
            lpips=lpips,
        )
        self.adversarial = adv
        self.adversarial_weight = _checks.check_non_negative(adversarial_weight, "adversarial_weight")

    def extra_repr(self) -> str:
        return (
            f"adversarial={self.adversarial!r}, adversarial_weight={self.adversarial_weight}, "
            f"pixel={self.pixel!r}, pixel_weight={self.pixel_weight}, topiq_weight={self.topiq_weight}, "
            f"nr_weight={self.nr_weight}"
        )

    def forward(
        self,
        fake: torch.Tensor,
        real: torch.Tensor,
        fake_logits: torch.Tensor,
        real_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``fake`` (N, C, H, W) generator output, ``real`` its ground truth, and the
        discriminator's logits on them (``real_logits`` only for ``"ragan"``)."""
        _checks.check_pair(fake, real, pred_name="fake", target_name="real", values=False)
        for name, logits in (("fake_logits", fake_logits), ("real_logits", real_logits)):
            if isinstance(logits, torch.Tensor) and logits.dim() > 0 and logits.shape[0] != fake.shape[0]:
                raise ValueError(
                    f"`{name}` must have one row per image of `fake` (batch {fake.shape[0]}); "
                    f"got shape {tuple(logits.shape)}"
                )
        terms = self._mix(fake, real, ("fake", "real"))
        adv = adversarial_g_loss(fake_logits, real_logits, self.adversarial)  # type: ignore[arg-type]
        terms["adversarial"] = adv
        total = terms["total"] + self.adversarial_weight * adv
        logs = {k: v.detach() for k, v in terms.items()}
        logs["total"] = total.detach()
        return total, logs
