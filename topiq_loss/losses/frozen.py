"""What every TOPIQ loss module shares: a frozen network it holds but never exposes.

The network is a plain attribute by default, so a generator holding the loss has
no extra parameters, state-dict entries or DDP buckets; ``.to()``/``.cuda()``/
``.half()`` still reach it. The network itself comes from
:func:`topiq_loss.weights.builder.build_network`.
"""

from __future__ import annotations

import itertools

from .. import _checks
from ..functional.objectives import Objective
from ..functional.robust import RandomTransforms
from ..models.trunk import CFANetTrunk
from .holder import FrozenHolder

__all__ = ["FrozenNetworkLoss"]

class FrozenNetworkLoss(FrozenHolder):
    """Base of the TOPIQ loss modules: holds a frozen CFANet and the options common to all.

    Args: see :class:`~topiq_loss.TOPIQLoss` (reduction, loss_weight, input_range, robust,
    check_values, keep_in_state_dict). Settings of the network itself (gradient
    checkpointing, backbone autocast, BatchNorm folding) live on the network; the loss
    forwards :meth:`set_grad_checkpointing` and :meth:`set_backbone_autocast` to it
    (see :class:`~topiq_loss.losses.holder.FrozenHolder`).
    """

    def __init__(
        self,
        net: CFANetTrunk,
        net_type: type[CFANetTrunk],
        *,
        objective: Objective,
        weights_name: str,
        reduction: str,
        loss_weight: float,
        input_range: tuple[float, float],
        robust: bool | RandomTransforms,
        check_values: bool,
        keep_in_state_dict: bool,
    ) -> None:
        super().__init__()
        #: NaN/inf and range checks of the images and the score, read with one host sync
        #: per call; False makes none (shapes, dtypes and devices are always checked).
        self.check_values = _checks.check_bool(check_values, "check_values")
        self._robust_options(robust)
        if not isinstance(net, net_type):
            raise TypeError(f"`net` must be a {net_type.__name__}; got {type(net).__name__}")
        self.reduction = _checks.check_reduction(reduction)
        self.loss_weight = _checks.check_loss_weight(loss_weight)
        self.input_range = _checks.check_input_range(input_range)
        if any(t.is_meta for t in itertools.chain(net.parameters(), net.buffers())):
            raise ValueError(
                "`net` has tensors on the meta device (no values): build the network outside "
                "`torch.device('meta')` and load its weights before giving it to the loss"
            )
        self._hold(net, keep_in_state_dict)
        self.weights_name = weights_name
        self.objective: Objective = objective

    def _repr_fields(self) -> list[str]:
        """What a subclass adds to ``repr`` between the common options and the settings."""
        return []

    def extra_repr(self) -> str:
        return ", ".join([
            f"weights={self.weights_name!r}, objective={self.objective!r}, reduction={self.reduction!r}, "
            f"loss_weight={self.loss_weight}, input_range={self.input_range}",
            *self._repr_fields(),
            self._settings_repr(),
        ])
