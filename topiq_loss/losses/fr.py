"""``TOPIQLoss``: the frozen TOPIQ-FR network as a perceptual loss module."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import cast

import torch

from .. import _checks
from ..functional.fr import (
    Reduction,
    TargetFeatures,
    reduce_loss,
    topiq_fr,
    topiq_fr_features,
    topiq_fr_loss,
    topiq_fr_target_features,
)
from ..functional.maps import QualityMaps, quality_maps
from ..functional.objectives import Objective, check_objective
from ..functional.robust import RandomTransforms
from ..models.cfanet_fr import CFANetFeatures, CFANetFR
from ..weights.builder import build_network
from ..weights.registry import DEFAULT_WEIGHTS
from .frozen import FrozenNetworkLoss
from .holder import weights_label

__all__ = ["TOPIQLoss", "TOPIQTarget", "build_network"]


_ROBUST_TARGET = (
    "`robust=True` transforms the target at every call, so its features cannot be cached: "
    "use loss_fn(pred, target), or a loss with robust=False for with_target()"
)


class TOPIQLoss(FrozenNetworkLoss):
    """TOPIQ-FR perceptual loss, 0 with a zero gradient at ``pred == target`` by default.

    ``loss_weight * reduce(rho(score(target, target) - score(pred, target)))`` with the
    default ``objective="anchored"`` (``rho`` a Charbonnier penalty, about ``|d|`` away
    from 0): the prediction is asked for the target's quality, neither less nor more.
    ``objective="score"`` gives ``loss_weight * reduce(1 - score(pred, target))``, the
    published score as a loss, for reproduction; it is not minimised at the target.

    The network is frozen: it has no trainable parameters, stays in eval mode
    whatever ``.train()`` is called, and by default is left out of ``state_dict()``
    (and of ``parameters()``), so a generator holding this loss saves and loads
    checkpoints as if it were absent. ``.to()``/``.cuda()``/``.half()`` still move it.

    Args:
        weights: ``"kadid"`` (default), ``"pipal"``, a checkpoint path, or ``None``
            (random weights, tests only; warns).
        objective: ``"anchored"`` (default) or ``"score"``; see above and
            :func:`~topiq_loss.topiq_fr_loss`. ``score()`` is the published score either way.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        loss_weight: multiplies the loss.
        input_range: (low, high) of pixel values: (0, 1) default, (-1, 1) for tanh
            outputs. Values slightly outside are passed through, as the reference does.
        robust: ``False`` (default); ``True`` scores each pair under a random
            transform (translation 0-7 px, flips, transpose, 2x box downscale)
            applied identically to both images, drawn per sample and per call
            (E-LPIPS style): small pixel-aligned patterns that fool the plain model
            stop paying. A :class:`RandomTransforms` chooses the transforms, the
            number averaged per call and a seeded generator.
        check_values: refuse NaN/inf images and scores and warn about out-of-range
            values, reading them with one host sync per call (default); ``False``
            makes none, for a GPU loop whose data is known good. Also an attribute.
        keep_in_state_dict: save the network's weights in (and require them from) the
            parent's ``state_dict``, under ``_net.``; the network stays out of
            ``modules()`` either way, so a parent's module walk cannot edit it.
        net: a :class:`CFANetFR` to use instead of loading ``weights``; frozen in place
            (its tensors become buffers, see :func:`~topiq_loss.losses.holder.freeze_network`).
        cache_dir: where official weights are cached (default torch.hub's).
        progress: show a download progress bar.

    Settings of the network (see :class:`~topiq_loss.models.trunk.CFANetTrunk`), chainable:
    ``TOPIQLoss().set_grad_checkpointing()`` (less memory, ~1 extra forward in
    backward), ``.set_backbone_autocast()`` (half-precision ResNet50 under autocast),
    and ``loss.net.semantic_model.set_fused(False)`` (the reference's unfolded
    BatchNorm arithmetic; folding is the default: same maths, 1.4-1.7x faster on CPU).

    Shape:
        - pred, target: (N, 3, H, W) or (N, 1, H, W), H, W >= 32, floating point.
        - Output: scalar, or (N,) with ``reduction="none"``.

    Example:
        >>> loss_fn = TOPIQLoss(weights=None)  # doctest: +SKIP
        >>> loss = loss_fn(sr, hr)  # doctest: +SKIP
        >>> loss.backward()  # doctest: +SKIP
    """

    #: A loss: lower is better (the torchmetrics attribute frameworks check).
    higher_is_better = False

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
        objective: Objective = "anchored",
        *,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        input_range: tuple[float, float] = (0.0, 1.0),
        robust: bool | RandomTransforms = False,
        check_values: bool = True,
        keep_in_state_dict: bool = False,
        net: CFANetFR | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        objective = check_objective(objective)  # before a network is built
        progress = _checks.check_bool(progress, "progress")
        label = weights_label(weights, given=net is not None)
        if net is None:
            net = build_network(weights, kind="fr", cache_dir=cache_dir, progress=progress)
        super().__init__(
            net, CFANetFR, objective=objective, weights_name=label, reduction=reduction, loss_weight=loss_weight,
            input_range=input_range, robust=robust, check_values=check_values, keep_in_state_dict=keep_in_state_dict,
        )

    @property
    def net(self) -> CFANetFR:
        """The frozen :class:`CFANetFR`."""
        return cast(CFANetFR, super().net)

    def forward(self, pred: torch.Tensor, target: torch.Tensor | TargetFeatures) -> torch.Tensor:
        """Loss of ``pred`` (N, C, H, W) against ``target``; lower is better.

        Gradients flow to ``pred`` (and to ``target`` if it requires grad, through both
        of the anchored objective's scores). With ``robust=True`` the loss is the
        random-transformation ensemble's.
        """
        return self.loss_weight * reduce_loss(self.loss_values(pred, target), self.reduction)

    def loss_values(
        self, pred: torch.Tensor, target: torch.Tensor | TargetFeatures, check_values: bool | None = None
    ) -> torch.Tensor:
        """(N,) unweighted, unreduced loss of ``pred`` against ``target`` for this
        loss's ``objective``; with ``robust=True`` the mean over the random transforms,
        each applied to both terms alike. ``check_values`` overrides the loss's setting
        for this call (an adapter that checked the images already passes False)."""

        def values(p: torch.Tensor, t: torch.Tensor | TargetFeatures, check: bool) -> torch.Tensor:
            return topiq_fr_loss(
                p, t, net=self.net, objective=self.objective, reduction="none", input_range=self.input_range,
                check_values=check,
            )

        return self._per_sample(values, pred, target, check_values)

    def score(self, pred: torch.Tensor, target: torch.Tensor | TargetFeatures) -> torch.Tensor:
        """(N,) TOPIQ-FR quality of ``pred`` against ``target``, higher is better.

        With ``robust=True``: the mean over ``robust_samples`` random transforms, each
        applied identically to ``pred`` and ``target`` (evaluation of the robust metric).
        """

        def fr(p: torch.Tensor, t: torch.Tensor | TargetFeatures, check: bool) -> torch.Tensor:
            return topiq_fr(p, t, net=self.net, input_range=self.input_range, check_values=check)

        return self._per_sample(fr, pred, target)

    def _per_sample(
        self,
        fn: Callable[[torch.Tensor, torch.Tensor | TargetFeatures, bool], torch.Tensor],
        pred: torch.Tensor,
        target: torch.Tensor | TargetFeatures,
        check_values: bool | None = None,
    ) -> torch.Tensor:
        """``fn(pred, target, check)``, or with ``robust=True`` its mean over random
        transforms; the values are checked once per call either way."""
        check = self.check_values if check_values is None else check_values
        if not self.robust:
            out = fn(pred, target, False)
        elif isinstance(target, TargetFeatures):
            raise ValueError(_ROBUST_TARGET)
        else:
            _checks.check_pair(pred, target, values=False)  # before any transform touches them
            out = self._ensemble(lambda p, t: fn(p, t, False), pred, target)
        if check:
            # Read here, not in the functional: the range warning is once per loss (this
            # object), not once per network, which metrics and losses may share.
            images = [(pred, "pred")] if isinstance(target, TargetFeatures) else [(pred, "pred"), (target, "target")]
            names = " and ".join(f"`{n}`" for _, n in images)
            _checks.check_values(images, out, names, self.input_range, owner=self)
        return out

    def with_target(self, target: torch.Tensor) -> TOPIQTarget:
        """This loss against a fixed ``target`` whose backbone features are computed once.

        For image optimisation and for ranking many candidates against one reference:
        each call then runs the backbone on ``pred`` only. Same loss (to 1e-6) and
        gradients as ``self(pred, target)``; no gradient flows to ``target``.

        Args:
            target: (N, C, H, W) or (1, C, H, W) reference images in ``input_range``;
                a batch of 1 is compared with every prediction.

        Example:
            >>> fixed = loss_fn.with_target(hr)  # doctest: +SKIP
            >>> fixed(x).backward(); fixed.score(x)  # doctest: +SKIP
        """
        if self.robust:
            raise ValueError(_ROBUST_TARGET)
        return TOPIQTarget(self, target)

    def features(self, pred: torch.Tensor, target: torch.Tensor) -> CFANetFeatures:
        """Score with the GLP gates and cross-scale attention maps (native resolution)."""
        return topiq_fr_features(pred, target, net=self.net, input_range=self.input_range)

    def quality_maps(self, pred: torch.Tensor, target: torch.Tensor) -> QualityMaps:
        """Per-scale GLP gates and cross-scale attention, upsampled to (N, 1, H, W).

        No gradients; see :class:`~topiq_loss.QualityMaps`.
        """
        return quality_maps(pred, target, net=self.net, input_range=self.input_range)


class TOPIQTarget:
    """A :class:`TOPIQLoss` bound to one target (see :meth:`TOPIQLoss.with_target`).

    Calling it with ``pred`` gives the loss, ``.score(pred)`` the (N,) quality.
    It follows the loss's settings at call time; when the loss's network has changed
    since (moved or cast, ``load_state_dict``, any in-place edit of its tensors; see
    :meth:`~topiq_loss.functional.fr.TargetFeatures.fits`), the target's features are
    computed again, from a copy of the target kept for that, with the network as it is
    now.

    Shape:
        - pred: (N, C, H, W) with the target's C, H, W; N equal to the target's
          batch, or any N when the target's batch is 1.
    """

    def __init__(self, loss: TOPIQLoss, target: torch.Tensor) -> None:
        self.loss = loss
        self._features = topiq_fr_target_features(target, net=loss.net, input_range=loss.input_range)
        self._image = target.detach().clone()

    @property
    def target(self) -> TargetFeatures:
        """The target's features, in the loss network's current dtype and device."""
        net = self.loss.net
        if not self._features.fits(net):
            self._features = topiq_fr_target_features(
                self._image.to(net.h_emb.device), net=net, input_range=self.loss.input_range
            )
        return self._features

    def __call__(self, pred: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.loss(pred, self.target))

    def score(self, pred: torch.Tensor) -> torch.Tensor:
        """(N,) quality of ``pred`` against the fixed target, higher is better."""
        return self.loss.score(pred, self.target)

    def __repr__(self) -> str:
        return f"TOPIQTarget(shape={self.target.shape}, loss={self.loss!r})"
