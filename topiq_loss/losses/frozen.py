"""What every TOPIQ loss module shares: a frozen network it holds but never exposes.

The network is a plain attribute by default, so a generator holding the loss has
no extra parameters, state-dict entries or DDP buckets; ``.to()``/``.cuda()``/
``.half()`` still reach it. Its fused backbone is built once here, after loading.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import warnings
from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

from . import _checks
from .checkpoint import LAYOUTS
from .holder import FrozenHolder
from .hub import checkpoint_layout, load_state_dict_checked, resolve_weights
from .robust import RandomTransforms
from .trunk import CFANetTrunk
from .weights import WeightsEntry, WeightsKindError

__all__ = ["FrozenNetworkLoss", "load_network"]

def load_network(
    weights: str | os.PathLike[str] | None,
    registry: Mapping[str, WeightsEntry],
    default_build: Callable[[], nn.Module],
    layout_builds: Mapping[str, Callable[[], nn.Module]],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[CFANetTrunk, WeightsEntry | None]:
    """A frozen network in eval mode with ``weights`` loaded, and its registry entry.

    A registry name builds the entry's network; a file builds the network its
    tensors describe (``layout_builds``, by :func:`~topiq_loss.hub.checkpoint_layout`);
    ``None`` builds ``default_build`` with random weights (tests only; warns).

    Raises:
        WeightsKindError: the file is of a known layout not in ``layout_builds``.
    """
    state, source, entry = resolve_weights(weights, cache_dir=cache_dir, progress=progress, registry=registry)
    if entry is not None:
        build = entry.build
    elif state is not None:
        layout = checkpoint_layout(state)
        if layout is not None and layout not in layout_builds:
            # Refused before building a network that could not hold it.
            raise WeightsKindError(
                f"{source} is a {LAYOUTS[layout]} checkpoint, not a "
                f"{' or '.join(LAYOUTS[k] for k in layout_builds)} one: its kind is {layout!r}, "
                f"not {' or '.join(map(repr, layout_builds))}"
            )
        build = layout_builds.get(layout or "", default_build)
    else:
        build = default_build
    # Under torch.device("meta") (deferred init of a large model), the loss's network
    # would hold no values that to_empty() could bring back: build it for real.
    with torch.device("cpu") if torch.empty(0).device.type == "meta" else contextlib.nullcontext():
        net = build()
    if state is None:
        warnings.warn(
            "TOPIQ network built with weights='random': RANDOM weights, scores are meaningless. "
            "Use this for tests only.",
            UserWarning,
            stacklevel=4,
        )
    else:
        load_state_dict_checked(net, state, source)
    net.requires_grad_(False)
    return net.eval(), entry  # type: ignore[return-value]


class FrozenNetworkLoss(FrozenHolder):
    """Base of the TOPIQ loss modules: holds a frozen CFANet and the options common to all.

    Args: see :class:`~topiq_loss.TOPIQLoss` (reduction, loss_weight, input_range, robust,
    check_values, keep_in_state_dict). Settings of the network itself (gradient
    checkpointing, backbone autocast, BatchNorm folding) live on the network; the loss
    forwards :meth:`set_grad_checkpointing` and :meth:`set_backbone_autocast` to it
    (see :class:`~topiq_loss.holder.FrozenHolder`).
    """

    def __init__(
        self,
        net: CFANetTrunk,
        net_type: type[CFANetTrunk],
        *,
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
