"""A frozen TOPIQ network from a ``weights=`` choice: a registry name, a file, or random.

The kind (``"fr"``, ``"nr"``, ``"iaa"``) comes from the registry entry or from the
checkpoint's tensors; a ``kind=`` given as well is checked against it.
"""

from __future__ import annotations

import contextlib
import enum
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal, TypeAlias, overload

import torch
import torch.nn as nn

from ..models.cfanet_fr import CFANetFR
from ..models.cfanet_nr import CFANetNR
from ..models.seeded_init import seeded_init
from ..models.trunk import CFANetTrunk
from .checkpoint import LAYOUTS
from .hub import checkpoint_layout, load_state_dict_checked, resolve_weights
from .registry import (
    BUILD_BY_KIND,
    BUILD_BY_LAYOUT,
    DEFAULT_WEIGHTS_BY_KIND,
    KINDS,
    LAYOUT_KINDS,
    RANDOM,
    REGISTRY,
    Kind,
    WeightsEntry,
    WeightsKindError,
    check_kind,
)

__all__ = ["DEFAULT", "build_network", "build_network_of_kinds", "load_network", "load_network_of_kinds"]


class _Default(enum.Enum):
    DEFAULT = "default"

    def __repr__(self) -> str:
        return "DEFAULT"


#: ``weights=`` default of :func:`build_network`: the default weights of the kind
#: (``"kadid"`` for ``"fr"`` and for no kind, ``"koniq"``, ``"ava"``). Not ``None``, which
#: means random weights.
DEFAULT: Final = _Default.DEFAULT


WeightsArg: TypeAlias = str | os.PathLike[str] | None | _Default


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
    tensors describe (``layout_builds``, by :func:`~topiq_loss.weights.hub.checkpoint_layout`);
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
            kinds = dict.fromkeys(LAYOUT_KINDS.get(k, k) for k in layout_builds)
            raise WeightsKindError(
                f"{source} is a {LAYOUTS[layout]} checkpoint, not a "
                f"{' or '.join(LAYOUTS[k] for k in kinds)} one: its kind is {LAYOUT_KINDS.get(layout, layout)!r}, "
                f"not {' or '.join(map(repr, kinds))}"
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


# A kind given by keyword says which class comes back (TOPIQLoss relies on it).
@overload
def build_network(
    weights: WeightsArg = ...,
    *,
    kind: Literal["fr"],
    cache_dir: str | os.PathLike[str] | None = ...,
    progress: bool = ...,
) -> CFANetFR: ...
@overload
def build_network(
    weights: WeightsArg = ...,
    *,
    kind: Literal["nr", "iaa"],
    cache_dir: str | os.PathLike[str] | None = ...,
    progress: bool = ...,
) -> CFANetNR: ...
@overload
def build_network(
    weights: WeightsArg = ...,
    kind: str | None = ...,
    *,
    cache_dir: str | os.PathLike[str] | None = ...,
    progress: bool = ...,
) -> CFANetFR | CFANetNR: ...
def build_network(
    weights: WeightsArg = DEFAULT,
    kind: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CFANetFR | CFANetNR:
    """A frozen network in eval mode with ``weights`` loaded: CFANetFR, or CFANetNR for
    ``"nr"`` and ``"iaa"``.

    Args:
        weights: a registry name (:func:`~topiq_loss.list_weights`; the kind is the
            entry's), a checkpoint path (the kind is read from its tensors),
            ``"random"`` or ``None`` (random weights, tests only; warns), or left out
            (the default weights of ``kind``; ``"kadid"`` without one).
        kind: ``"fr"``, ``"nr"``, ``"iaa"``, or None to take the kind of ``weights``
            (``"fr"`` for random weights).
        cache_dir: where official weights are cached (default torch.hub's).
        progress: show a download progress bar.

    Raises:
        WeightsKindError: a ``ValueError`` (and a :class:`~topiq_loss.WeightsError`):
            ``weights`` are of another kind than ``kind``; for a registry name, before
            anything is downloaded.
        ValueError: ``kind`` or the registry name is unknown.
        WeightsError: the weights cannot be downloaded, verified or loaded.
    """
    kinds = KINDS if kind is None else (check_kind(kind),)
    return build_network_of_kinds(weights, kinds, cache_dir=cache_dir, progress=progress)


def build_network_of_kinds(
    weights: WeightsArg,
    kinds: Sequence[Kind],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CFANetFR | CFANetNR:
    """:func:`build_network` accepting weights of any of ``kinds``; ``kinds[0]`` gives
    the default and random weights (``build_nr_network`` takes ``("nr", "iaa")``)."""
    net, _ = load_network_of_kinds(weights, kinds, cache_dir=cache_dir, progress=progress)
    return net


def load_network_of_kinds(
    weights: WeightsArg,
    kinds: Sequence[Kind],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[CFANetFR | CFANetNR, WeightsEntry | None]:
    """:func:`build_network_of_kinds` and the registry entry of the weights (None for a
    file of no official name, or random weights): the way every TOPIQ network is built.

    The network is constructed under :func:`~topiq_loss.models.seeded_init.seeded_init`, seeded
    from ``kinds[0]`` (the kind random weights build): random weights are the same for
    a kind whatever ran before, and torch's global random stream is left as it was.
    """
    first = kinds[0]
    if weights is DEFAULT:
        weights = DEFAULT_WEIGHTS_BY_KIND[first]
    if isinstance(weights, str) and weights in REGISTRY and REGISTRY[weights].kind not in kinds:
        # Before any download: the name alone says the weights cannot fit.
        names = sorted(n for n, e in REGISTRY.items() if e.kind in kinds)
        asked = " or ".join(map(repr, kinds))
        raise WeightsKindError(
            f"`weights` must be one of {names}, a path to a checkpoint file, or {RANDOM!r} for "
            f"`kind` {asked}; got {weights!r}, whose kind is {REGISTRY[weights].kind!r}"
        )
    registry = {n: e for n, e in REGISTRY.items() if e.kind in kinds}
    builds = {layout: build for layout, build in BUILD_BY_LAYOUT.items() if LAYOUT_KINDS[layout] in kinds}
    with seeded_init(f"topiq-{first}:{RANDOM}"):
        net, entry = load_network(weights, registry, BUILD_BY_KIND[first], builds, cache_dir, progress)
    return net, entry  # type: ignore[return-value]
