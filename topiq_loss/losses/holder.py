"""A module that holds a frozen network it never exposes, and the robust-mode options.

The network is a plain attribute, so a generator holding the loss has no extra
parameters, buffers, submodules or DDP buckets, and no module walk of a parent
(``modules()``, ``apply()``, a ``spectral_norm`` loop) reaches it; ``.to()``/``.cuda()``/
``.half()`` still reach it, and a parent's ``to_empty()`` moves it without emptying it.
With ``keep_in_state_dict=True`` its tensors are saved in and loaded from the state dict
(under ``_net.``, as the submodule of 0.5 was) by state-dict hooks. Either way its tensors are buffers (see
:func:`freeze_network`): frozen by construction, whatever copies, loads or moves it.
Both the TOPIQ losses and the LPIPS losses are such holders.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn as nn

from .. import _checks
from ..functional.robust import RandomTransforms, ensemble_score, private_generator
from ..weights.registry import is_random

__all__ = ["FrozenHolder", "freeze_network", "keeping_values", "weights_label"]

_PROBES = itertools.count()
_Holder = TypeVar("_Holder", bound="FrozenHolder")


def _refreeze(module: nn.Module, incompatible_keys: object) -> None:
    # A load_state_dict(..., assign=True) of nn.Parameter values registers them as
    # parameters again (Module.__setattr__ does): turn them back into buffers.
    freeze_network(module)


#: Where a kept network's tensors sit in its holder's state dict (the submodule name 0.5 used).
KEPT_PREFIX = "_net."


def _save_kept(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any]) -> None:
    # The kept network's entries, as a submodule named `_net` would have saved them.
    if not getattr(module, "keep_in_state_dict", False):
        return
    module.__dict__["_frozen"][0].state_dict(destination=state_dict, prefix=prefix + KEPT_PREFIX)


def _load_kept(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    # The kept network's entries, loaded as Module.load_state_dict loads a submodule
    # (same missing / unexpected keys and errors), then taken out of the dict so the
    # holder does not report them as unexpected.
    if not getattr(module, "keep_in_state_dict", False):
        return
    net = module.__dict__["_frozen"][0]
    metadata = getattr(state_dict, "_metadata", None)
    assign = bool(local_metadata.get("assign_to_params_buffers", False))

    def load(m: nn.Module, at: str) -> None:
        meta = {} if metadata is None else dict(metadata.get(at[:-1], {}))
        if assign:
            meta["assign_to_params_buffers"] = True
        m._load_from_state_dict(state_dict, at, meta, strict, missing_keys, unexpected_keys, error_msgs)
        for name, child in m._modules.items():
            if child is not None:
                load(child, at + name + ".")

    load(net, prefix + KEPT_PREFIX)
    freeze_network(net)  # an assigning load registered Parameters: buffers again
    for key in [k for k in state_dict if k.startswith(prefix + KEPT_PREFIX)]:
        del state_dict[key]


def weights_label(weights: object, given: bool = False) -> str:
    """How a loss names its weights in ``repr`` and reports: the ``weights=`` value,
    ``"random (tests only)"``, or ``"given network"`` for a network passed in."""
    if given:
        return "given network"
    return "random (tests only)" if is_random(weights) else str(weights)


def freeze_network(net: nn.Module) -> nn.Module:
    """Hold every tensor of ``net`` as a buffer, in place; returns ``net``.

    What every loss and metric here does to its network before holding it. A frozen
    network has no parameter at all, so nothing that works on parameters can train it:
    ``requires_grad_(True)`` (of the network or of a parent), an optimiser over a
    parent's ``parameters()``, DDP's gradient buckets. Buffers stay buffers through
    every way a module is copied or moved (pickle, ``copy.deepcopy``, ``torch.save``,
    ``.to()``, ``.half()``, ``to_empty()``), and a load that assigns ``nn.Parameter``
    values is undone by a load hook. ``state_dict()`` keys and their order are the
    network's own, so official checkpoints load with ``strict=True``. Idempotent.
    """
    for module in net.modules():
        params = module._parameters
        if params:
            # Parameters first, as state_dict() listed them: the saved order is unchanged.
            # (A None entry, a conv without bias, stays a None attribute.)
            frozen = {name: None if p is None else p.detach().requires_grad_(False) for name, p in params.items()}
            rest = dict(module._buffers)
            params.clear()
            module._buffers.clear()
            module._buffers.update({**frozen, **rest})
        for buf in module._buffers.values():
            if buf is not None and buf.requires_grad:
                buf.requires_grad_(False)
        if _refreeze not in module._load_state_dict_post_hooks.values():
            module.register_load_state_dict_post_hook(_refreeze)  # type: ignore[no-untyped-call]
    return net


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


class FrozenHolder(nn.Module):
    """Base of every loss module here: a hidden frozen network, robust-mode options, eval mode.

    Settings of the network itself (gradient checkpointing, backbone autocast) live on
    the network, timm style; the loss forwards :meth:`set_grad_checkpointing` and
    :meth:`set_backbone_autocast` to it and reads them back as ``checkpoint`` and
    ``amp_backbone``.
    """

    keep_in_state_dict: bool
    input_range: tuple[float, float]

    def _hold(self, net: nn.Module, keep_in_state_dict: bool) -> None:
        """Hold ``net`` frozen and in eval mode, hidden unless ``keep_in_state_dict``."""
        self.keep_in_state_dict = _checks.check_bool(keep_in_state_dict, "keep_in_state_dict")
        freeze_network(net).eval()
        # A plain attribute, kept or not: invisible to parameters(), buffers(), modules(),
        # train(), apply() and DDP, so a parent's module walk (``for m in model.modules():
        # spectral_norm(m)``, a weight init through ``apply``) never reaches it; _apply
        # below keeps .to()/.cuda()/.half() working. A kept network's tensors still go in
        # and out of the state dict, under ``_net.``, through the two hooks.
        self.__dict__["_frozen"] = (net,)
        self._kept_hooks()
        super().train(False)

    def _kept_hooks(self) -> None:
        """The state-dict hooks of a kept network, registered once per holder (_hold runs
        again when a metric swaps the network); they read keep_in_state_dict at each call."""
        if self.keep_in_state_dict and not self.__dict__.get("_kept_hooks_on", False):
            self.register_state_dict_post_hook(_save_kept)  # type: ignore[no-untyped-call]
            self.register_load_state_dict_pre_hook(_load_kept)  # type: ignore[no-untyped-call]
            self.__dict__["_kept_hooks_on"] = True

    def _robust_options(self, robust: bool | RandomTransforms) -> None:
        """``robust``: False, True (the default :class:`RandomTransforms`) or the
        transforms to draw from, which also hold the sample count and generator."""
        if isinstance(robust, RandomTransforms):
            transforms = robust
        elif isinstance(robust, bool):
            transforms = RandomTransforms()
        else:
            raise TypeError(f"`robust` must be a bool or a RandomTransforms; got {type(robust).__name__}")
        self.robust = robust is not False
        self.robust_transforms = transforms
        # A private generator by default: robust draws never advance torch's global RNG.
        self.generator = transforms.generator if transforms.generator is not None else private_generator()

    @property
    def robust_samples(self) -> int:
        """Transforms averaged per call (the robust transforms' ``samples``)."""
        return self.robust_transforms.samples

    @property
    def own_generator(self) -> bool:
        """Whether the robust draws come from this loss's private generator."""
        return self.robust_transforms.generator is None

    @property
    def net(self) -> Any:
        """The frozen network."""
        return self.__dict__["_frozen"][0]

    def set_grad_checkpointing(self: _Holder, enable: bool = True) -> _Holder:
        """Gradient checkpointing of the network (less memory, about one extra forward
        in backward; same values and gradients). A network shared by several losses
        shares the setting. Returns ``self``."""
        self.net.set_grad_checkpointing(_checks.check_bool(enable, "enable"))
        return self

    def set_backbone_autocast(self: _Holder, enable: bool = True) -> _Holder:
        """Under ``torch.autocast``, run the backbone in half precision (the head stays in
        the network's dtype unless :meth:`set_autocast`). Faster, but input gradients
        drift (for TOPIQ's ResNet50 the cosine to fp32 measured 0.971 bf16, 0.998 fp16
        on CPU). Kept from 0.5. Returns ``self``."""
        self.net.set_backbone_autocast(_checks.check_bool(enable, "enable"))
        return self

    def set_autocast(self: _Holder, enable: bool = True) -> _Holder:
        """Opt in to half precision: under ``torch.autocast`` the whole network follows it.
        By default it runs in its own dtype (float32) whatever autocast says, and the loss
        is float32. What opting in costs: the input gradient misses the accuracy
        contract (geometric-mean relative error against float64 <= 5e-3; measured on
        CPU for TOPIQ-FR 1.0e-2 to 1.3e-2 in bfloat16, TOPIQ-NR 1.4e-2). Returns ``self``."""
        self.net.set_autocast(_checks.check_bool(enable, "enable"))
        return self

    @property
    def checkpoint(self) -> bool:
        """Whether the network uses gradient checkpointing (see :meth:`set_grad_checkpointing`)."""
        return bool(self.net.grad_checkpointing)

    @property
    def amp_backbone(self) -> bool:
        """Whether the backbone follows autocast (see :meth:`set_backbone_autocast`)."""
        return bool(self.net.backbone_autocast)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> FrozenHolder:
        fn = keeping_values(fn)
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        if recurse:
            self.__dict__["_frozen"][0]._apply(fn, recurse)
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[no-untyped-call]
        kept = self._modules.pop("_net", None)
        if kept is not None:
            # Pickled by 0.4 or 0.5, which held a kept network as the submodule `_net`.
            self.__dict__["_frozen"] = (kept,)
            self._kept_hooks()
        # An object pickled before its network was frozen this way (0.4 held it as
        # Parameters) comes back frozen too: unpickling goes through the same freeze.
        freeze_network(self.net)
        if getattr(self, "own_generator", False):
            # Each unpickled copy (a spawned DDP rank, a dataloader worker) draws its own
            # transforms; a user's seeded generator is kept as given.
            self.generator = private_generator()

    def _settings_repr(self) -> str:
        """The network's settings and the robust options, the tail of every loss's ``repr``."""
        return f"checkpoint={self.checkpoint}, amp_backbone={self.amp_backbone}" + (
            f", robust=True, robust_samples={self.robust_samples}" if self.robust else ""
        )

    def train(self, mode: bool = True) -> FrozenHolder:
        """No-op: the loss always stays in eval mode (frozen BatchNorm, no dropout)."""
        return super().train(False)

    def _ensemble(self, score: Callable[..., torch.Tensor], *images: torch.Tensor) -> torch.Tensor:
        """The mean of ``score(*images)`` over this loss's random transforms (robust mode)."""
        return ensemble_score(score, images, self.robust_transforms, self.generator, self.input_range)
