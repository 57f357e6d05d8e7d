"""The TOPIQ-FR score and loss as functions of a given (frozen) network."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Literal, cast

import torch

from .. import _checks
from ..models.cfanet_fr import CFANetFeatures, CFANetFR
from ..models.trunk import CFANetTrunk
from .objectives import Objective, anchored_penalty, check_loss_options

__all__ = [
    "prepare_pair",
    "prepare_pred",
    "reduce_loss",
    "topiq_fr",
    "topiq_fr_features",
    "topiq_fr_loss",
    "topiq_fr_target_features",
    "NetworkStamp",
    "TargetFeatures",
]

Reduction = Literal["mean", "sum", "none"]


def _stamp_of(t: torch.Tensor) -> tuple[int, int]:
    try:
        version = t._version
    except RuntimeError:  # an inference tensor has no version counter: its memory is the stamp
        version = -1
    return version, t.data_ptr()


class NetworkStamp:
    """Which tensors a network held, and their versions, at one moment.

    Features computed from a network are valid while it holds the same tensor objects
    with the same version counters: a ``load_state_dict`` (which copies into the
    tensors), any in-place edit, an assigning load, a cast or a move all change one.
    The tensors are held by weak reference, so the stamp keeps no old weights alive.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        self._tensors = [(weakref.ref(t), _stamp_of(t)) for t in _network_tensors(net)]

    def __getstate__(self) -> dict[str, object]:
        # Weak references do not pickle; a copy matches no network, so its features are
        # computed again (TOPIQTarget) or refused (the functional API).
        return {"_tensors": [(_no_tensor, (-2, 0))]}

    def matches(self, net: torch.nn.Module) -> bool:
        """Whether ``net`` holds the same tensors, unedited, as when this stamp was taken."""
        now = _network_tensors(net)
        if len(now) != len(self._tensors):
            return False
        return all(ref() is t and stamp == _stamp_of(t) for (ref, stamp), t in zip(self._tensors, now, strict=True))


def _no_tensor() -> None:
    return None


def _network_tensors(net: torch.nn.Module) -> list[torch.Tensor]:
    return [*net.parameters(), *net.buffers()]


@dataclass(frozen=True)
class TargetFeatures:
    """A target's backbone features, computed once (see :func:`topiq_fr_target_features`).

    Attributes:
        features: the 5 backbone levels, (N, C_i, h_i, w_i), no graph attached.
        shape: the target images' shape (N, C, H, W).
        anchor: (N,) the target scored against itself, the anchored objective's
            reference point; no graph attached.
        image: the target as the network saw it (RGB in [0, 1], its dtype), from which a
            batch-1 target is computed again at a prediction's batch size.
        stamp: the network's tensors when the features were computed (see :meth:`fits`).
    """

    features: tuple[torch.Tensor, ...]
    shape: tuple[int, int, int, int]
    anchor: torch.Tensor
    image: torch.Tensor | None = None
    stamp: NetworkStamp | None = None
    _batches: dict[int, TargetFeatures] = field(default_factory=dict, compare=False, repr=False)

    def fits(self, net: CFANetTrunk) -> bool:
        """Whether these features are in ``net``'s current dtype and on its device, and
        ``net`` holds the very tensors, unedited, they were computed with (not loaded,
        edited in place, cast or moved since)."""
        held = self.features[0]
        if held.dtype != net.h_emb.dtype or held.device != net.h_emb.device:
            return False
        return self.stamp is None or self.stamp.matches(net)

    def at_batch(self, n: int, net: CFANetFR) -> TargetFeatures:
        """These features for a prediction batch of ``n``: ``self``, or for a batch-1
        target its features computed at batch ``n`` (kept for the next call).

        The backbone's and the head's roundings depend on the batch size, so a batch-1
        target's features broadcast to ``n`` predictions would not be bit for bit those
        of the same images in a batch of ``n``, and ``loss(x, x)`` would not be exactly 0.
        """
        if n == self.shape[0] or self.shape[0] != 1 or self.image is None:
            return self
        if n not in self._batches:
            if len(self._batches) >= 2:  # the batch sizes of one loop: a last one and its tail
                self._batches.pop(next(iter(self._batches)))
            self._batches[n] = _features_of(self.image.expand(n, -1, -1, -1), net, self.shape[1:])
        return self._batches[n]


def to_unit_rgb(x: torch.Tensor, net: CFANetTrunk, low: float, high: float) -> torch.Tensor:
    """Grey repeated to RGB, ``(low, high)`` mapped to [0, 1], the network's dtype, and
    contiguous memory.

    Every image reaches the network in one memory format: a channels-last ``pred`` and
    a contiguous ``target`` would otherwise run different convolution kernels, whose
    roundings differ, and ``loss(x, x)`` would not be exactly 0 (measured 2e-11, with a
    nonzero gradient).
    """
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if (low, high) != (0.0, 1.0):
        x = (x - low) / (high - low)
    return x.to(dtype=net.h_emb.dtype, memory_format=torch.contiguous_format)


# Checks and input conversion run eagerly even inside torch.compile: the NaN scan
# needs a host sync, and the fused backbone is (re)built here, outside any graph,
# so that a compiled network is one graph with no break inside.
@_checks.eager
def prepare_pair(
    pred: torch.Tensor,
    target: torch.Tensor,
    net: CFANetFR,
    input_range: tuple[float, float] = (0.0, 1.0),
    values: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check inputs and bring them to the network's convention: RGB in [0, 1], its dtype.

    Grey images (C = 1) are repeated to 3 channels. Values outside the range are
    passed through unchanged, as the reference model does (network outputs often
    overshoot slightly). Never modifies the inputs in place. ``values=False`` leaves
    the value checks to the caller (:func:`~topiq_loss._checks.check_values`, once
    per call together with the score's).
    """
    low, high = _checks.check_input_range(input_range)
    pred, target = _checks.check_pair(
        pred, target, device=net.h_emb.device, input_range=(low, high), owner=net, values=values
    )
    return to_unit_rgb(pred, net, low, high), to_unit_rgb(target, net, low, high)


@_checks.eager
def prepare_pred(
    pred: torch.Tensor,
    target_shape: tuple[int, ...],
    net: CFANetFR,
    input_range: tuple[float, float] = (0.0, 1.0),
    values: bool = True,
) -> torch.Tensor:
    """:func:`prepare_pair` for a prediction scored against cached target features.

    ``pred`` must have the target's channels and size; its batch must equal the
    target's, or the target's batch must be 1 (one reference for many candidates).
    """
    low, high = _checks.check_input_range(input_range)
    pred = _checks.check_image(
        pred, "pred", device=net.h_emb.device, input_range=(low, high), owner=net, values=values
    )
    n, c, h, w = target_shape
    if pred.shape[1:] != (c, h, w) or (n != 1 and pred.shape[0] != n):
        raise ValueError(
            f"`pred` must have the cached target's shape {tuple(target_shape)} (or any batch "
            f"size when the target's batch is 1); got {tuple(pred.shape)}"
        )
    return to_unit_rgb(pred, net, low, high)


@_checks.eager
def check_target_features(target: TargetFeatures, net: CFANetTrunk) -> None:
    """Refuse features computed for the network in another dtype or on another device,
    or before its tensors were loaded or edited (they would score with stale features)."""
    if not target.fits(net):
        held, dtype, device = target.features[0], net.h_emb.dtype, net.h_emb.device
        if held.dtype == dtype and held.device == device:
            raise ValueError(
                "`target` features were computed before the network's tensors changed (a "
                "load_state_dict, an in-place edit): compute them again (topiq_fr_target_features, "
                "or loss.with_target)"
            )
        raise ValueError(
            f"`target` features are {held.dtype} on {held.device} but the network is now {dtype} on "
            f"{device}: compute them again (topiq_fr_target_features, or loss.with_target) after "
            "casting or moving the network"
        )


@_checks.eager
def target_for(target: TargetFeatures, pred: torch.Tensor, net: CFANetFR) -> TargetFeatures:
    """``target`` checked against ``net`` and brought to ``pred``'s batch (see
    :meth:`TargetFeatures.at_batch`)."""
    check_target_features(target, net)
    return target.at_batch(pred.shape[0], net)


def reduce_loss(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Apply ``reduction`` to per-sample values of shape (N,)."""
    reduction = _checks.check_reduction(reduction)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def topiq_fr(
    pred: torch.Tensor,
    target: torch.Tensor | TargetFeatures,
    *,
    net: CFANetFR,
    input_range: tuple[float, float] = (0.0, 1.0),
    check_values: bool = True,
) -> torch.Tensor:
    """TOPIQ-FR quality of ``pred`` against ``target`` (higher is better).

    Args:
        pred: (N, 3, H, W) or (N, 1, H, W) images, H, W >= 32, values in ``input_range``.
        target: reference images, same shape; or their :class:`TargetFeatures`
            (batch N, or 1 to score every prediction against one reference).
        net: the network (e.g. ``TOPIQLoss().net``); it is not built per call. Its
            settings apply (``net.set_grad_checkpointing()``, ``net.set_backbone_autocast()``).
        input_range: (low, high) of the pixel values; (0, 1) or (-1, 1) for GAN-style.
        check_values: refuse NaN/inf inputs and scores and warn about out-of-range
            values, with one host sync per call; ``False`` makes none (shapes, dtypes
            and devices are always checked).

    Returns:
        (N,) scores, about 0..1 with the official weights.
    """
    return _score(pred, target, net, input_range, check_values)[0]


def _score(
    pred: torch.Tensor,
    target: torch.Tensor | TargetFeatures,
    net: CFANetFR,
    input_range: tuple[float, float],
    check_values: bool,
) -> tuple[torch.Tensor, TargetFeatures | None]:
    """:func:`topiq_fr`, and the target features at ``pred``'s batch when given features."""
    features = None
    if isinstance(target, TargetFeatures):
        p = prepare_pred(pred, target.shape, net, input_range, values=False)
        features = target_for(target, p, net)
        score = net.head(net.backbone_features(p), list(features.features)).score
        images = [(pred, "pred")]
    else:
        p, t = prepare_pair(pred, target, net, input_range, values=False)
        score = net(p, t)
        images = [(pred, "pred"), (target, "target")]
    if check_values:
        _checks.check_values(images, score, " and ".join(f"`{n}`" for _, n in images), input_range, owner=net)
    return score, features


def topiq_fr_features(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    net: CFANetFR,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> CFANetFeatures:
    """Score plus gate and cross-attention maps (see :class:`CFANetFeatures`)."""
    p, t = prepare_pair(pred, target, net, input_range)
    return net.forward_features(p, t, need_maps=True)


def topiq_fr_loss(
    pred: torch.Tensor,
    target: torch.Tensor | TargetFeatures,
    *,
    net: CFANetFR,
    objective: Objective = "anchored",
    reduction: Reduction = "mean",
    loss_weight: float = 1.0,
    input_range: tuple[float, float] = (0.0, 1.0),
    check_values: bool = True,
) -> torch.Tensor:
    """The TOPIQ-FR loss of ``pred`` against ``target``: lower is better, ready to minimise.

    Arguments not listed are those of :func:`topiq_fr`.

    Args:
        objective: ``"anchored"`` (default): ``rho(score(t, t) - score(p, t))`` with the
            Charbonnier penalty :func:`~topiq_loss.functional.objectives.anchored_penalty`, 0 with a
            zero gradient at ``pred == target`` and rising for a deficit *or* an
            overshoot. ``"score"``: ``1 - score(p, t)``, the published score as a loss
            (pyiqa's ``as_loss``); it is *not* minimised at the target, and descent on
            it walks away from the target wherever the network scores higher.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        loss_weight: multiplies the loss.

    Returns:
        a scalar for ``"mean"``/``"sum"``, else (N,).
    """
    objective, weight = check_loss_options(objective, reduction, loss_weight)
    if objective == "score" or isinstance(target, TargetFeatures):
        score, features = _score(pred, target, net, input_range, check_values)
        if objective == "score":
            return weight * reduce_loss(1.0 - score, reduction)
        anchor = cast(TargetFeatures, features).anchor
    else:
        p, t = prepare_pair(pred, target, net, input_range, values=False)
        score, anchor = net.score_and_anchor(p, t)
        if check_values:
            _checks.check_values(
                [(pred, "pred"), (target, "target")], score, "`pred` and `target`", input_range, owner=net
            )
    return weight * reduce_loss(anchored_penalty(anchor.to(score.dtype) - score), reduction)


def topiq_fr_target_features(
    target: torch.Tensor,
    *,
    net: CFANetFR,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> TargetFeatures:
    """The target's backbone features, computed once and without a graph.

    Pass the result as ``target`` to :func:`topiq_fr` / :func:`topiq_fr_loss` to
    score many predictions against a fixed target without re-running its backbone
    (image optimisation, ranking candidates). Same scores and gradients as passing
    the images. Gradients never flow to the target.

    Args:
        target: (N, C, H, W) reference images, C in (1, 3), H, W >= 32, in ``input_range``.
        net: the network the features are for.
        input_range: (low, high) of the pixel values.
    """
    low, high = _checks.check_input_range(input_range)
    target = _checks.check_image(target, "target", device=net.h_emb.device, input_range=(low, high), owner=net)
    n, c, h, w = target.shape
    return _features_of(to_unit_rgb(target, net, low, high), net, (c, h, w))


def _features_of(image: torch.Tensor, net: CFANetFR, chw: tuple[int, ...]) -> TargetFeatures:
    """:class:`TargetFeatures` of ``image``, already RGB in [0, 1] in the network's dtype."""
    image = image.detach().contiguous()
    stamp = NetworkStamp(net)
    with torch.no_grad():
        feats = net.backbone_features(image)
        anchor = net.anchor_head(feats).score
    c, h, w = chw
    return TargetFeatures(
        features=tuple(feats), shape=(image.shape[0], c, h, w), anchor=anchor,
        image=image if image.shape[0] == 1 else None, stamp=stamp,
    )
