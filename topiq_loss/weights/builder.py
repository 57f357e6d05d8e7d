"""A frozen TOPIQ network from a ``weights=`` choice: a registry name, a file, or random.

The kind (``"fr"``, ``"nr"``, ``"iaa"``) comes from the registry entry or from the
checkpoint's tensors; a ``kind=`` given as well is checked against it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias, overload

from .cfanet import CFANetFR
from .cfanet_nr import CFANetNR
from .frozen import load_network
from .seeded_init import seeded_init
from .weights import (
    BUILD_BY_KIND,
    DEFAULT_WEIGHTS_BY_KIND,
    KINDS,
    RANDOM,
    REGISTRY,
    Kind,
    WeightsEntry,
    WeightsKindError,
    check_kind,
)

__all__ = ["DEFAULT", "build_network", "build_network_of_kinds", "load_network_of_kinds"]


class _Default(enum.Enum):
    DEFAULT = "default"

    def __repr__(self) -> str:
        return "DEFAULT"


#: ``weights=`` default of :func:`build_network`: the default weights of the kind
#: (``"kadid"`` for ``"fr"`` and for no kind, ``"koniq"``, ``"ava"``). Not ``None``, which
#: means random weights.
DEFAULT: Final = _Default.DEFAULT


WeightsArg: TypeAlias = str | os.PathLike[str] | None | _Default


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

    The network is constructed under :func:`~topiq_loss.seeded_init.seeded_init`, seeded
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
    builds = {k: build for k, build in BUILD_BY_KIND.items() if k in kinds}
    with seeded_init(f"topiq-{first}:{RANDOM}"):
        net, entry = load_network(weights, registry, BUILD_BY_KIND[first], builds, cache_dir, progress)
    return net, entry  # type: ignore[return-value]
