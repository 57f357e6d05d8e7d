"""A frozen TOPIQ network from a ``weights=`` choice, its registry entry held on it as timm's ``pretrained_cfg``."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from typing import Literal, overload

import torch
import torch.nn as nn

from .._errors import WeightsKindError
from ..models.cfanet_fr import CFANetFR
from ..models.cfanet_nr import CFANetNR
from ..models.seeded_init import seeded_init
from .checkpoint import LAYOUTS, checkpoint_layout, load_state_dict_checked
from .hub import resolve_weights
from .registry import BUILD_BY_LAYOUT, DEFAULT_WEIGHTS_BY_KIND, LAYOUT_KINDS, RANDOM, REGISTRY, WeightsEntry, as_kinds

__all__ = ["DEFAULT", "build_network", "weights_entry"]

#: ``weights=`` left out: the default weights of the (first) kind. A file named ``default`` is ``./default``.
DEFAULT = "default"
_ATTRIBUTE = "weights_entry"
Weights = str | os.PathLike[str] | None
_Dir = str | os.PathLike[str] | None


def weights_entry(net: nn.Module) -> WeightsEntry | None:
    """The registry entry of the weights ``net`` was built with; None for random weights or an unofficial file."""
    entry = getattr(net, _ATTRIBUTE, None)
    return entry if isinstance(entry, WeightsEntry) else None


# A kind given by keyword says which class comes back (TOPIQLoss relies on it).
@overload
def build_network(
    weights: Weights = ..., *, kind: Literal["fr"], cache_dir: _Dir = ..., progress: bool = ...
) -> CFANetFR: ...
@overload
def build_network(
    weights: Weights = ..., *, kind: Literal["nr", "iaa"], cache_dir: _Dir = ..., progress: bool = ...
) -> CFANetNR: ...
@overload
def build_network(
    weights: Weights = ..., kind: str | Sequence[str] | None = ..., *, cache_dir: _Dir = ..., progress: bool = ...
) -> CFANetFR | CFANetNR: ...
def build_network(
    weights: Weights = DEFAULT, kind: str | Sequence[str] | None = None, *, cache_dir: _Dir = None, progress: bool = True
) -> CFANetFR | CFANetNR:
    """A frozen network in eval mode (CFANetFR, or CFANetNR for ``"nr"`` and ``"iaa"``) with ``weights`` loaded.

    ``weights``: a registry name, a checkpoint path, ``"random"`` / ``None`` (tests only; warns) or :data:`DEFAULT`;
    ``kind``: one, several (the first gives the default and random weights) or None (any). Weights of another kind
    raise WeightsKindError (for a name, before any download).
    """
    kinds = as_kinds(kind)
    first = kinds[0]
    if isinstance(weights, str) and weights == DEFAULT:
        weights = DEFAULT_WEIGHTS_BY_KIND[first]
    registry = {n: e for n, e in REGISTRY.items() if e.kind in kinds}
    if isinstance(weights, str) and weights in REGISTRY and weights not in registry:
        # Before any download: the name alone says the weights cannot fit.
        raise WeightsKindError(
            f"`weights` must be one of {sorted(registry)}, a path to a checkpoint file, or {RANDOM!r} for "
            f"`kind` {' or '.join(map(repr, kinds))}; got {weights!r}, whose kind is {REGISTRY[weights].kind!r}"
        )
    # Random weights are the same for a kind whatever ran before; torch's global stream is left as it was.
    with seeded_init(f"topiq-{first}:{RANDOM}"):
        state, source, entry = resolve_weights(weights, cache_dir=cache_dir, progress=progress, registry=registry)
        layout = checkpoint_layout(state) if state is not None and entry is None else None
        if layout is not None and LAYOUT_KINDS[layout] not in kinds:
            # Refused before building a network that could not hold it.
            raise WeightsKindError(
                f"{source} is a {LAYOUTS[layout]} checkpoint, not a {' or '.join(LAYOUTS[k] for k in kinds)} one: "
                f"its kind is {LAYOUT_KINDS[layout]!r}, not {' or '.join(map(repr, kinds))}"
            )
        # A file builds the network its tensors describe (its kind and backbone).
        build = entry.build if entry is not None else BUILD_BY_LAYOUT[layout or first]
        # Under torch.device("meta") (deferred init), no values that to_empty() could bring back: build it for real.
        with torch.device("cpu") if torch.empty(0).device.type == "meta" else contextlib.nullcontext():
            net = build()
    if state is None:
        warnings.warn("TOPIQ network built with weights='random': RANDOM weights, scores are meaningless. "
                      "Use this for tests only.", UserWarning, stacklevel=2)
    else:
        load_state_dict_checked(net, state, source)
    setattr(net, _ATTRIBUTE, entry)
    return net.requires_grad_(False).eval()  # type: ignore[return-value]
