"""The no-reference TOPIQ score and loss as functions of a given (frozen) network."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _checks
from ..models.cfanet_nr import CFANetNR
from ..models.trunk import CFANetFeatures
from .fr import Reduction, reduce_loss, to_unit_rgb
from .objectives import Objective, anchored_penalty, check_loss_options

__all__ = ["prepare_image", "resize_short_side", "score_to_loss", "topiq_nr", "topiq_nr_features", "topiq_nr_loss"]


def resize_short_side(x: torch.Tensor, short: int) -> torch.Tensor:
    """Antialiased bilinear resize to a short side of ``short`` px, aspect kept.

    The long side is ``int(short * long / short_in)`` (truncated), as torchvision's
    ``resize(x, short)`` computes it, which is what the official models were
    evaluated with. Differentiable.
    """
    h, w = x.shape[-2:]
    if h <= w:
        size = (short, int(short * w / h))
    else:
        size = (int(short * h / w), short)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


@_checks.eager
def prepare_image(
    img: torch.Tensor,
    net: CFANetNR,
    input_range: tuple[float, float] = (0.0, 1.0),
    resize: int | None = None,
    values: bool = True,
    name: str = "img",
) -> torch.Tensor:
    """Check ``img`` and bring it to the network's convention: RGB in [0, 1], its dtype,
    the short side ``resize`` (None: as given). Never modifies the input in place.
    ``values=False`` leaves the value checks to the caller."""
    low, high = _checks.check_input_range(input_range)
    img = _checks.check_image(img, name, device=net.h_emb.device, input_range=(low, high), owner=net, values=values)
    resize = _checks.check_resize(resize)
    x = to_unit_rgb(img, net, low, high)
    return resize_short_side(x, resize) if resize is not None else x


def topiq_nr(
    img: torch.Tensor,
    *,
    net: CFANetNR,
    input_range: tuple[float, float] = (0.0, 1.0),
    resize: int | None = None,
    check_values: bool = True,
) -> torch.Tensor:
    """No-reference TOPIQ score of ``img`` (higher is better).

    Args:
        img: (N, 3, H, W) or (N, 1, H, W) images, H, W >= 32, values in ``input_range``.
        net: the network (e.g. ``TOPIQNRLoss().net``); it is not built per call. Its
            settings apply (``net.set_grad_checkpointing()``, ``net.set_backbone_autocast()``).
        input_range: (low, high) of the pixel values.
        resize: short side the image is resized to first (antialiased), or None.
            The official FLIVE and AVA models expect 384 (their registry entries say so).
        check_values: NaN/inf and range checks with one host sync (see
            :func:`~topiq_loss.topiq_fr`); ``False`` makes none.

    Returns:
        (N,) scores: about 0..1 for the quality models, 1..10 for aesthetics.
    """
    x = prepare_image(img, net, input_range, resize, values=False)
    score: torch.Tensor = net(x)
    if check_values:
        _checks.check_values([(img, "img")], score, "`img`", input_range, owner=net)
    return score


def topiq_nr_features(
    img: torch.Tensor,
    *,
    net: CFANetNR,
    input_range: tuple[float, float] = (0.0, 1.0),
    resize: int | None = None,
) -> CFANetFeatures:
    """Score plus the gated convolutions' gates and the cross-attention maps."""
    return net.forward_features(prepare_image(img, net, input_range, resize), need_maps=True)


def score_to_loss(score: torch.Tensor, score_range: tuple[float, float]) -> torch.Tensor:
    """``(best - score) / (best - worst)`` with ``score_range = (worst, best)``: 0 at the
    best score, 1 at the worst, for every entry's range. Shape: (N,) -> (N,)."""
    worst, best = score_range
    return (best - score) / (best - worst)


def topiq_nr_loss(
    img: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    net: CFANetNR,
    objective: Objective = "anchored",
    score_range: tuple[float, float] = (0.0, 1.0),
    reduction: Reduction = "mean",
    loss_weight: float = 1.0,
    input_range: tuple[float, float] = (0.0, 1.0),
    resize: int | None = None,
    check_values: bool = True,
) -> torch.Tensor:
    """The no-reference TOPIQ loss of ``img``, 0 is best, ready to minimise.

    Without ``target``: ``(best - score(img)) / (best - worst)``, for training without
    ground truth. With ``target`` (``objective="anchored"``, the default):
    ``rho((score(target) - score(img)) / (best - worst))``, the Charbonnier penalty of
    :func:`~topiq_loss.functional.objectives.anchored_penalty`: the restoration should look as
    natural as its ground truth, not "better" (the way no-reference losses hack their
    way into artifacts); 0 with a zero gradient at ``img == target``. Arguments not
    listed are those of :func:`topiq_nr`.

    Args:
        img: (N, C, H, W), C in (1, 3), H, W >= 32, values in ``input_range``.
        target: None, or the ground truth, same shape (gradients reach it only if it
            requires grad).
        objective: ``"anchored"`` or ``"score"`` (which refuses a ``target``).
        score_range: (worst, best) of the model's score, e.g. (0, 1) for quality,
            (1, 10) for aesthetics.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        loss_weight: multiplies the loss.

    Returns:
        a scalar for ``"mean"``/``"sum"``, else (N,).
    """
    objective, weight = check_loss_options(objective, reduction, loss_weight)
    worst, best = _checks.check_input_range(score_range, name="score_range")
    if target is not None and objective == "score":
        raise ValueError(
            "`target` was given with objective='score', which scores `img` alone: "
            "use objective='anchored' to compare with the target, or drop the target"
        )
    if target is not None:
        _checks.check_pair(img, target, pred_name="img", target_name="target", values=False)
    score = topiq_nr(img, net=net, input_range=input_range, resize=resize, check_values=False)
    images = [(img, "img")]
    if target is None:
        values = score_to_loss(score, (worst, best))
    else:
        # The anchor needs a graph only when the target requires grad (then its gradient is exact).
        with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
            anchor = topiq_nr(target, net=net, input_range=input_range, resize=resize, check_values=False)
        values = anchored_penalty((anchor.to(score.dtype) - score) / (best - worst))
        images.append((target, "target"))
    if check_values:
        _checks.check_values(images, values, " and ".join(f"`{n}`" for _, n in images), input_range, owner=net)
    return weight * reduce_loss(values, reduction)
