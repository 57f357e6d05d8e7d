"""One frozen network per weights, kind, device and dtype in a process.

The metrics and the framework plugs take their networks from here, so two
``TOPIQMetric``\\ s with the same weights on one device hold one ResNet50 between them
(the integrations promise one network per process). Sharing is safe because a held
network is frozen (its tensors are buffers, see :func:`~topiq_loss.losses.holder.freeze_network`)
and nothing here mutates it: a metric moved to another device takes that device's
network, it never moves the shared one. The cache holds networks weakly: one lives as
long as something holds it. Random weights are never shared (each build is its own draw).
"""

from __future__ import annotations

import copy
import os
import threading
import weakref
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import torch
import torch.nn as nn

from .. import _checks
from ..models.cfanet_nr import CFANetNR
from ..weights.builder import build_network, weights_entry
from ..weights.registry import REGISTRY, WeightsEntry, is_random
from .fr import TOPIQLoss
from .holder import freeze_network, weights_label
from .nr import TOPIQNRLoss

__all__ = ["network_on_device", "shared_fr_loss", "shared_network", "shared_nr_loss", "weights_identity"]

_Net = TypeVar("_Net", bound=nn.Module)
#: (kind, weights identity) -> the network on one (device, dtype).
_CACHE: weakref.WeakValueDictionary[tuple[Hashable, torch.device, torch.dtype], nn.Module] = (
    weakref.WeakValueDictionary()
)
#: (kind, weights identity) -> the registry entry the weights came with (resize, score range).
_ENTRIES: dict[Hashable, WeightsEntry | None] = {}
_LOCK = threading.RLock()


def weights_identity(weights: str | os.PathLike[str] | None) -> Hashable | None:
    """What makes two ``weights=`` the same network: a registry name (its file is pinned by
    hash), or a file's resolved path, size and modification time (a rewritten file is
    other weights). None for random weights and for a path that cannot be read (its build
    raises the error that names it)."""
    if is_random(weights):
        return None
    if isinstance(weights, str) and weights in REGISTRY:
        return ("registry", weights)
    if not isinstance(weights, (str, os.PathLike)):
        return None
    try:
        path = Path(weights).resolve()
        stat = path.stat()
    except (OSError, ValueError):
        return None
    if not path.is_file():
        return None
    return ("file", str(path), stat.st_size, stat.st_mtime_ns)


def _device(device: torch.device | str) -> torch.device:
    """``device`` with its index ("cuda" and "cuda:0" are one device)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def shared_network(
    kind: str,
    weights: str | os.PathLike[str] | None,
    device: torch.device | str,
    load: Callable[[], tuple[_Net, WeightsEntry | None]],
) -> tuple[_Net, WeightsEntry | None, Hashable | None]:
    """The process's frozen network for ``weights`` of ``kind`` on ``device``, its registry
    entry, and its cache key (None: not shared, random weights).

    ``load()`` builds it (on the CPU, float32) when no holder alive has it yet; the
    network is frozen before it is shared.
    """
    ident = weights_identity(weights)
    device = _device(device)
    if ident is None:
        net, entry = load()
        freeze_network(net)
        return net.to(device), entry, None
    key = (kind, ident)
    with _LOCK:
        found = _CACHE.get((key, device, torch.float32))
        if found is None:
            net, entry = load()
            found = freeze_network(net).to(device)
            _CACHE[(key, device, _dtype(found))] = found
            _ENTRIES[key] = entry
        return found, _ENTRIES.get(key), key  # type: ignore[return-value]


def network_on_device(key: Hashable | None, net: _Net, device: torch.device | str) -> _Net:
    """``net`` (cached under ``key``) on ``device``: the cached one there, else a copy moved
    there and cached; ``net`` itself stays where it is (others hold it). With
    ``key=None`` (a network not shared) ``net`` itself is moved. Also how an unpickled
    holder joins the cache (``net`` already on ``device``)."""
    device = _device(device)
    if key is None:
        return net.to(device)
    with _LOCK:
        slot = (key, device, _dtype(net))
        found = _CACHE.get(slot)
        if found is None:
            found = net if _net_device(net) == device else copy.deepcopy(net).to(device)
            _CACHE[slot] = found
        return found  # type: ignore[return-value]


def _dtype(net: nn.Module) -> torch.dtype:
    return next((t.dtype for t in net.buffers() if t.is_floating_point()), torch.float32)


def _net_device(net: nn.Module) -> Any:
    return next((_device(t.device) for t in net.buffers()), None)


def shared_fr_loss(
    weights: str | os.PathLike[str] | None,
    device: torch.device | str = "cpu",
    *,
    input_range: tuple[float, float] = (0.0, 1.0),
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[TOPIQLoss, Hashable | None]:
    """A :class:`~topiq_loss.TOPIQLoss` on the process's shared FR network for
    ``weights`` on ``device``, and the network's cache key (None: not shared)."""
    progress = _checks.check_bool(progress, "progress")
    net, _, key = shared_network(
        "fr", weights, device,
        lambda: (build_network(weights, kind="fr", cache_dir=cache_dir, progress=progress), None),
    )
    loss = TOPIQLoss(net=net, input_range=input_range)
    loss.weights_name = weights_label(None if key is None else weights)
    return loss, key


def _with_entry(net: _Net) -> tuple[_Net, WeightsEntry | None]:
    return net, weights_entry(net)


def shared_nr_loss(
    weights: str | os.PathLike[str] | None,
    device: torch.device | str = "cpu",
    *,
    input_range: tuple[float, float] = (0.0, 1.0),
    resize: int | None | Literal["auto"] = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[TOPIQNRLoss, Hashable | None]:
    """A :class:`~topiq_loss.TOPIQNRLoss` on the process's shared NR network for
    ``weights`` on ``device`` (``"auto"`` resize and score range from the weights'
    entry, as the loss itself does), and the network's cache key."""
    resize = _checks.check_resize(resize, auto=True)  # before a network is built
    progress = _checks.check_bool(progress, "progress")
    net, entry, key = shared_network(
        "nr", weights, device,
        lambda: _with_entry(build_network(weights, ("nr", "iaa"), cache_dir=cache_dir, progress=progress)),
    )
    size = (entry.resize if entry is not None else None) if resize == "auto" else resize
    loss = TOPIQNRLoss(
        net=cast(CFANetNR, net), input_range=input_range, resize=size,
        score_range=entry.score_range if entry is not None else "auto",
    )
    loss.weights_name = weights_label(None if key is None else weights)
    return loss, key
