"""``LPIPSLoss`` and ``LPIPSPlusLoss``: LPIPS and the TOPIQ paper's semantic-weighted
LPIPS+ as frozen, differentiable distances.

LPIPS averages each layer's distance map ``S_m`` over space. LPIPS+ (Chen et al.,
TOPIQ, IEEE TIP 2024, arXiv:2308.03060: its motivating experiment) pools it with weights taken
from the *reference* image's activations at one layer ``i``:
``sum_m sum(Resize(F_i^r) * S_m) / sum(Resize(F_i^r))``, where the weight map is the
channel sum of the raw (post-ReLU, unnormalised) features, bilinearly resized to each
``S_m``'s size: regions the network responds to count more.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import _checks
from ..functional.fr import Reduction, reduce_loss
from ..functional.robust import RandomTransforms
from ..models.lpips import LPIPSNetwork
from ..weights.lpips import build_lpips_network, lpips_network_from_module
from .holder import FrozenHolder, weights_label

__all__ = ["LPIPSLoss", "LPIPSPlusLoss"]

_Loss = TypeVar("_Loss", bound="LPIPSLoss")


@_checks.eager
def _prepare(
    pred: torch.Tensor, target: torch.Tensor, net: LPIPSNetwork, input_range: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked images as RGB in [-1, 1] (LPIPS' convention), in the network's dtype.

    Their values are read later, with the distance, by :func:`_check_values`: one host
    sync per call, as for TOPIQ."""
    pred, target = _checks.check_pair(pred, target, device=net.device, values=False)
    low, high = input_range

    def convert(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if (low, high) != (-1.0, 1.0):
            x = (x - low) * (2.0 / (high - low)) - 1.0
        # One memory format for both images, as for TOPIQ (functional.to_unit_rgb):
        # exactly 0 at the target whatever format each image came in.
        return x.to(dtype=net.dtype, memory_format=torch.contiguous_format)

    return convert(pred), convert(target)


def _check_values(
    pred: torch.Tensor, target: torch.Tensor, distance: torch.Tensor, owner: LPIPSLoss
) -> torch.Tensor:
    """The inputs' and the distance's values, in one host sync: NaN/inf inputs and a
    non-finite distance (finite inputs so large that the features overflow) are refused,
    as TOPIQ refuses them; far out-of-range inputs warn once per loss (``owner``)."""
    _checks.check_values(
        [(pred, "pred"), (target, "target")], distance, "`pred` and `target`", owner.input_range,
        owner=owner, what="LPIPS distance",
    )
    return distance


def _unit(f: torch.Tensor) -> torch.Tensor:
    # vector_norm's backward is 0 (not NaN) where a feature vector is all zero.
    norm: torch.Tensor = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    return f / (norm + 1e-10)


class LPIPSLoss(FrozenHolder):
    """LPIPS distance as a loss: ``loss_weight * reduce(d(pred, target))``, 0 at the target.

    ``semantic_layer=None`` is LPIPS (Zhang et al., CVPR 2018): per-layer maps averaged
    over space. An int ``i`` weights them by the target's layer-``i`` activations
    (LPIPS+, see :class:`LPIPSPlusLoss`). The network is frozen and hidden exactly as in
    :class:`~topiq_loss.TOPIQLoss`: not in ``parameters()``/``state_dict()``, always in
    eval mode, moved by ``.to()``.

    Args:
        net: ``"alex"`` (AlexNet, the LPIPS default) or ``"vgg"`` (VGG16).
        weights: ``"default"`` (torchvision's ImageNet backbone, downloaded through
            torchvision's cache, + the ``lpips`` package's v0.1 linear layers), a path
            to a saved ``lpips.LPIPS`` state dict, or ``"random"`` / ``None`` (random,
            seeded from ``net``: tests only; warns).
        semantic_layer: ``None`` (plain average) or 0..4, the tap whose target
            activations weight the maps.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        loss_weight: multiplies the loss.
        input_range: (low, high) of pixel values: (0, 1) default, (-1, 1) for tanh outputs.
        keep_in_state_dict: save the network in ``state_dict`` (under ``_net.``; never in ``modules()``).
        progress: torchvision's download progress bar.
        network: an :class:`~topiq_loss.models.lpips.LPIPSNetwork` to use instead of loading
            ``net``/``weights`` (shared, e.g. between LPIPS and LPIPS+); frozen in place
            (its tensors become buffers).
        robust: score each pair under a random transform applied identically to both
            images (the ensemble of :class:`~topiq_loss.TOPIQLoss`'s robust mode):
            ``True``, or a :class:`~topiq_loss.RandomTransforms` (transforms, samples
            per call, generator).

    Settings of the network, forwarded by the loss and chainable:
    ``.set_grad_checkpointing()`` (the backbone recomputed in backward) and
    ``.set_backbone_autocast()`` (under ``torch.autocast`` the backbone runs in half
    precision too; by default it stays in the network's dtype). The distance itself is
    always computed in float32 (or float64) from the features.

    Shape:
        - pred, target: (N, 3, H, W) or (N, 1, H, W), H, W >= 32, floating point.
        - Output: scalar, or (N,) with ``reduction="none"``.
    """

    higher_is_better = False

    def __init__(
        self,
        net: str = "alex",
        weights: str | os.PathLike[str] | None = "default",
        semantic_layer: int | None = None,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        input_range: tuple[float, float] = (0.0, 1.0),
        keep_in_state_dict: bool = False,
        progress: bool = True,
        network: LPIPSNetwork | None = None,
        robust: bool | RandomTransforms = False,
    ) -> None:
        super().__init__()
        if semantic_layer is not None and (
            isinstance(semantic_layer, bool) or not isinstance(semantic_layer, int) or not 0 <= semantic_layer <= 4
        ):
            raise ValueError(f"`semantic_layer` must be None or an int in 0..4; got {semantic_layer!r}")
        self.semantic_layer = semantic_layer
        self.reduction = _checks.check_reduction(reduction)
        self.loss_weight = _checks.check_loss_weight(loss_weight)
        self.input_range = _checks.check_input_range(input_range)
        self._robust_options(robust)
        progress = _checks.check_bool(progress, "progress")
        if network is None:
            network = build_lpips_network(_checks.check_choice(net, "net", ("alex", "vgg")), weights, progress)
            self.weights_name = weights_label(weights)
        elif not isinstance(network, LPIPSNetwork):
            raise TypeError(f"`network` must be an LPIPSNetwork; got {type(network).__name__}")
        else:
            self.weights_name = weights_label(None, given=True)
        self._hold(network, keep_in_state_dict)

    @classmethod
    def from_lpips(cls: type[_Loss], module: nn.Module, **kwargs: Any) -> _Loss:
        """This loss with the weights of an existing ``lpips.LPIPS`` module (backbone and
        linear layers, copied to a float32 network on the CPU: move the loss with ``.to()``);
        ``kwargs`` as for the constructor (not ``net``/``weights``).

        Example:
            >>> import lpips  # doctest: +SKIP
            >>> loss_fn = LPIPSPlusLoss.from_lpips(lpips.LPIPS(net="vgg"))  # doctest: +SKIP
        """
        return cls(network=lpips_network_from_module(module), **kwargs)

    @property
    def net(self) -> LPIPSNetwork:
        """The frozen :class:`~topiq_loss.models.lpips.LPIPSNetwork`."""
        return cast(LPIPSNetwork, super().net)

    def extra_repr(self) -> str:
        return (
            f"net={self.net.net_name!r}, weights={self.weights_name!r}, semantic_layer={self.semantic_layer}, "
            f"reduction={self.reduction!r}, loss_weight={self.loss_weight}, input_range={self.input_range}, "
            + self._settings_repr()
        )

    def layer_maps(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer distance maps ``S_m`` (N, 1, h_m, w_m) and pooling weights of the same
        sizes (the resized target activations; ones for plain LPIPS), float32 or wider."""
        maps, weights = self._layer_maps(pred, target)
        _checks.check_values([(pred, "pred"), (target, "target")], input_range=self.input_range, owner=self)
        return maps, weights

    def _layer_maps(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        # values unread: the caller reads them once, with what it computes from the maps
        net = self.net
        p, t = _prepare(pred, target, net, self.input_range)
        if t.requires_grad:  # one backbone pass over both
            both = net(torch.cat([p, t]))
            fp, ft = [f[: len(p)] for f in both], [f[len(p) :] for f in both]
        else:
            with torch.no_grad():
                ft = net(t)
            fp = net(p)
        wide = torch.promote_types(net.dtype, torch.float32)
        maps: list[torch.Tensor] = []
        weights: list[torch.Tensor] = []
        with torch.autocast(p.device.type, enabled=False):
            source = None if self.semantic_layer is None else ft[self.semantic_layer].to(wide).sum(1, keepdim=True)
            for a, b, lin in zip(fp, ft, net.lin_weights(), strict=True):
                d = (_unit(a.to(wide)) - _unit(b.to(wide))) ** 2
                # The 1x1 linear layer as a weighted channel sum: same maths, and on CPU
                # far faster than a one-output convolution (measured 0.1 vs >50 ms small).
                s = (d * lin.to(wide)).sum(1, keepdim=True)
                if source is None:
                    w = torch.ones_like(s)
                else:
                    w = F.interpolate(source, size=s.shape[-2:], mode="bilinear", align_corners=False)
                    # A reference with no activation at all (sum 0) falls back to the plain average.
                    empty = w.sum((1, 2, 3), keepdim=True) <= 0
                    w = torch.where(empty, torch.ones_like(w), w)
                maps.append(s)
                weights.append(w)
        return maps, weights

    def _distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        maps, weights = self._layer_maps(pred, target)
        total = torch.zeros(len(pred), dtype=maps[0].dtype, device=maps[0].device)
        for s, w in zip(maps, weights, strict=True):
            total = total + (s * w).sum((1, 2, 3)) / w.sum((1, 2, 3))
        return total

    def score(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N,) distance of ``pred`` to ``target``, >= 0, 0 when equal; lower is better.

        With ``robust=True``: the mean over ``robust_samples`` random transforms, each
        applied identically to both images.
        """
        if self.robust:
            _checks.check_pair(pred, target, values=False)  # before any transform touches them
            return _check_values(pred, target, self._ensemble(self._distance, pred, target), self)
        return _check_values(pred, target, self._distance(pred, target), self)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``pred`` (N, C, H, W) against ``target``; gradients flow to ``pred``
        (and to ``target`` if it requires grad)."""
        return self.loss_weight * reduce_loss(self.score(pred, target), self.reduction)

    def spatial_map(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) weighted distance map: the sum over layers of ``S_m * w_m / mean(w_m)``,
        bilinearly upsampled to the input size (for plain LPIPS, ``lpips.LPIPS(spatial=True)``'s
        map). Its spatial mean is close to :meth:`score` (equal before upsampling). Robust mode
        does not apply here."""
        maps, weights = self._layer_maps(pred, target)
        size = (int(pred.shape[-2]), int(pred.shape[-1]))
        out = torch.zeros((len(pred), 1) + size, dtype=maps[0].dtype, device=maps[0].device)
        for s, w in zip(maps, weights, strict=True):
            out = out + F.interpolate(s * w / w.mean((1, 2, 3), keepdim=True), size=size, mode="bilinear", align_corners=False)
        return _check_values(pred, target, out, self)


class LPIPSPlusLoss(LPIPSLoss):
    """LPIPS+ (the TOPIQ paper's motivating experiment): LPIPS pooled with the target's layer-``i``
    activations as weights, ``sum_m sum(Resize(F_i^r) * S_m) / sum(Resize(F_i^r))``.

    Same arguments as :class:`LPIPSLoss`, with ``semantic_layer=2`` (the third tap, which
    the paper found best; pyiqa's ``lpips+`` / ``lpips-vgg+``). A distance: 0 at the
    target, lower is better.

    Example:
        >>> loss_fn = LPIPSPlusLoss(net="alex")  # doctest: +SKIP
        >>> loss = loss_fn(sr, hr); loss.backward()  # doctest: +SKIP
    """

    def __init__(self, net: str = "alex", weights: str | os.PathLike[str] | None = "default",
                 semantic_layer: int | None = 2, **kwargs: Any) -> None:
        super().__init__(net, weights, semantic_layer, **kwargs)
