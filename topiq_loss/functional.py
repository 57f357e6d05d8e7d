"""The TOPIQ-FR score and loss as functions of a given (frozen) network."""

from __future__ import annotations

from typing import Literal

import torch

from . import _checks
from .cfanet import CFANetFR, CFANetFeatures

__all__ = ["topiq_fr", "topiq_fr_loss", "prepare_pair", "reduce_loss"]

Reduction = Literal["mean", "sum", "none"]


def prepare_pair(
    pred: torch.Tensor,
    target: torch.Tensor,
    net: CFANetFR,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check inputs and bring them to the network's convention: RGB in [0, 1], its dtype.

    Grey images (C = 1) are repeated to 3 channels. Values outside the range are
    passed through unchanged, as the reference model does (network outputs often
    overshoot slightly). Never modifies the inputs in place.
    """
    param = net.h_emb
    pred, target = _checks.check_pair(pred, target, device=param.device)
    low, high = _checks.check_input_range(input_range)
    out = []
    for x in (pred, target):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if (low, high) != (0.0, 1.0):
            x = (x - low) / (high - low)
        out.append(x.to(param.dtype))
    return out[0], out[1]


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
    target: torch.Tensor,
    *,
    net: CFANetFR,
    input_range: tuple[float, float] = (0.0, 1.0),
    checkpoint: bool = False,
    amp_backbone: bool = False,
) -> torch.Tensor:
    """TOPIQ-FR quality of ``pred`` against ``target`` (higher is better).

    Args:
        pred: (N, 3, H, W) or (N, 1, H, W) images, H, W >= 32, values in ``input_range``.
        target: reference images, same shape.
        net: the network (e.g. ``TOPIQLoss().net``); it is not built per call.
        input_range: (low, high) of the pixel values; (0, 1) or (-1, 1) for GAN-style.
        checkpoint: recompute backbone activations in backward (saves memory).
        amp_backbone: under ``torch.autocast``, run the backbone in half precision too
            (faster, but input gradients only ~0.97-0.998 cosine to fp32); by default
            it stays in float32 and only the attention head follows autocast.

    Returns:
        (N,) scores, about 0..1 with the official weights.
    """
    p, t = prepare_pair(pred, target, net, input_range)
    return net(p, t, checkpoint=checkpoint, amp_backbone=amp_backbone)


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
    target: torch.Tensor,
    *,
    net: CFANetFR,
    reduction: Reduction = "mean",
    loss_weight: float = 1.0,
    input_range: tuple[float, float] = (0.0, 1.0),
    checkpoint: bool = False,
    amp_backbone: bool = False,
) -> torch.Tensor:
    """``loss_weight * reduce(1 - score)``: lower is better, ready to minimise.

    Returns:
        a scalar for ``"mean"``/``"sum"``, else (N,).
    """
    weight = _checks.check_loss_weight(loss_weight)
    _checks.check_reduction(reduction)
    score = topiq_fr(
        pred, target, net=net, input_range=input_range, checkpoint=checkpoint, amp_backbone=amp_backbone
    )
    return weight * reduce_loss(1.0 - score, reduction)
