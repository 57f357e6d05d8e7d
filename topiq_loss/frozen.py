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
from typing import Any

import torch
import torch.nn as nn

from . import _checks
from .hub import checkpoint_layout, load_state_dict_checked, resolve_weights
from .robust import RandomTransforms, ensemble_score, private_generator
from .trunk import CFANetTrunk
from .weights import WeightsEntry

__all__ = ["FrozenNetworkLoss", "FrozenParameter", "load_network"]

_PROBES = itertools.count()


class FrozenParameter(nn.Parameter):
    """A parameter that stays frozen: ``requires_grad_(True)`` is ignored.

    Used for the network of a loss built with ``keep_in_state_dict=True``: it is then a
    submodule, so a parent's ``requires_grad_(True)`` (GAN code toggles it per step)
    would otherwise make it trainable and let an optimiser on the parent change it.
    """

    def requires_grad_(self, requires_grad: bool = True) -> FrozenParameter:
        return self


def freeze_parameters(net: nn.Module) -> None:
    """Replace every parameter of ``net`` by a :class:`FrozenParameter` with the same data."""
    for module in net.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and not isinstance(p, FrozenParameter):
                module._parameters[name] = FrozenParameter(p.detach(), requires_grad=False)


def keeping_values(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn``, or a plain move to its device where ``fn`` discards values (``to_empty()``).

    A parent's ``to_empty(device=...)`` reaches a loss through ``_apply``; applied to
    the frozen network it would leave uninitialised weights that no user code restores
    (they come from a checkpoint, not from the parent's init). A probe tells the two
    apart: integers exact in every float dtype, different at each call, so no memory
    left by an earlier probe can pass for kept values.
    """
    k = next(_PROBES) % 240 + 1
    probe = torch.arange(k, k + 8, dtype=torch.float32)
    out = fn(probe)
    if not isinstance(out, torch.Tensor) or out.device.type == "meta":
        return fn
    if torch.equal(out.detach().to("cpu", torch.float32), probe):
        return fn
    device = out.device
    return lambda t: t.to(device=device)


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
    """
    state, source, entry = resolve_weights(weights, cache_dir=cache_dir, progress=progress, registry=registry)
    if entry is not None:
        build = entry.build
    elif state is not None:
        build = layout_builds.get(checkpoint_layout(state) or "", default_build)
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


class FrozenNetworkLoss(nn.Module):
    """Base of the loss modules: holds a frozen CFANet and the options common to all.

    Args: see :class:`~topiq_loss.TOPIQLoss` (reduction, loss_weight, input_range,
    checkpoint, amp_backbone, fuse_backbone, channels_last, keep_in_state_dict, robust,
    robust_samples, robust_transforms, generator).
    """

    def __init__(
        self,
        net: CFANetTrunk,
        net_type: type[CFANetTrunk],
        reduction: str = "mean",
        loss_weight: float = 1.0,
        input_range: tuple[float, float] = (0.0, 1.0),
        checkpoint: bool = False,
        amp_backbone: bool = False,
        fuse_backbone: bool | None = None,
        channels_last: bool | None = None,
        keep_in_state_dict: bool = False,
        robust: bool = False,
        robust_samples: int = 1,
        robust_transforms: RandomTransforms | None = None,
        generator: torch.Generator | None = None,
        check_values: bool = True,
    ) -> None:
        super().__init__()
        #: NaN/inf and range checks of the images and the score, read with one host sync
        #: per call; False makes none (shapes, dtypes and devices are always checked).
        self.check_values = _checks.check_bool(check_values, "check_values")
        self.robust = _checks.check_bool(robust, "robust")
        if isinstance(robust_samples, bool) or not isinstance(robust_samples, int) or robust_samples < 1:
            raise ValueError(f"`robust_samples` must be an int >= 1; got {robust_samples!r}")
        self.robust_samples = robust_samples
        if robust_transforms is not None and not isinstance(robust_transforms, RandomTransforms):
            raise TypeError(
                f"`robust_transforms` must be a RandomTransforms or None; got {type(robust_transforms).__name__}"
            )
        self.robust_transforms = robust_transforms or RandomTransforms()
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None; got {type(generator).__name__}")
        # A private generator by default: robust draws never advance torch's global RNG.
        self.generator = generator if generator is not None else private_generator()
        self.own_generator = generator is None
        if not isinstance(net, net_type):
            raise TypeError(f"`net` must be a {net_type.__name__}; got {type(net).__name__}")
        self.reduction = _checks.check_reduction(reduction)
        self.loss_weight = _checks.check_loss_weight(loss_weight)
        self.input_range = _checks.check_input_range(input_range)
        self.checkpoint = _checks.check_bool(checkpoint, "checkpoint")
        self.amp_backbone = _checks.check_bool(amp_backbone, "amp_backbone")
        self.keep_in_state_dict = _checks.check_bool(keep_in_state_dict, "keep_in_state_dict")
        fuse_backbone = _checks.check_optional_bool(fuse_backbone, "fuse_backbone")
        channels_last = _checks.check_optional_bool(channels_last, "channels_last")
        if any(t.is_meta for t in itertools.chain(net.parameters(), net.buffers())):
            raise ValueError(
                "`net` has tensors on the meta device (no values): build the network outside "
                "`torch.device('meta')` and load its weights before giving it to the loss"
            )
        net.requires_grad_(False).eval()
        if fuse_backbone is not None or channels_last is not None:
            fuse = net.semantic_model.fused_enabled if fuse_backbone is None else bool(fuse_backbone)
            net.semantic_model.set_fused(fuse, channels_last)
        net.semantic_model.prepare()
        if self.keep_in_state_dict:
            freeze_parameters(net)
            self._net = net
        else:
            # A plain attribute: invisible to parameters(), state_dict(), train() and
            # DDP; _apply below keeps .to()/.cuda()/.half() working.
            self.__dict__["_frozen"] = (net,)
        super().train(False)

    @property
    def net(self) -> Any:
        """The frozen network."""
        return self._net if self.keep_in_state_dict else self.__dict__["_frozen"][0]

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> FrozenNetworkLoss:
        fn = keeping_values(fn)
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        if not self.keep_in_state_dict and recurse:
            self.__dict__["_frozen"][0]._apply(fn, recurse)
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[no-untyped-call]
        if self.own_generator:
            # Each unpickled copy (a spawned DDP rank, a dataloader worker) draws its own
            # transforms; a user's seeded generator is kept as given.
            self.generator = private_generator()

    def train(self, mode: bool = True) -> FrozenNetworkLoss:
        """No-op: the loss always stays in eval mode (frozen BatchNorm, no dropout)."""
        return super().train(False)

    def _ensemble(self, score: Callable[..., torch.Tensor], *images: torch.Tensor) -> torch.Tensor:
        """The mean of ``score(*images)`` over this loss's random transforms (robust mode)."""
        return ensemble_score(score, images, self.robust_samples, self.robust_transforms, self.generator)
