"""Checkpoint files: read (by :mod:`~topiq_loss.weights.reader`), tell the layout, load strictly.

The only module of the weights path that knows CFANet's key names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn

from .reader import MAX_WEIGHTS_BYTES, read_weights_file
from .registry import WeightsError

__all__ = ["LAYOUTS", "MAX_CHECKPOINT_BYTES", "checkpoint_layout", "load_state_dict_checked", "read_state_dict"]

#: Sum of a checkpoint's record sizes above which it is refused before loading.
MAX_CHECKPOINT_BYTES = MAX_WEIGHTS_BYTES

#: Checkpoint layouts, told apart by their tensors (the kind of each: ``registry.LAYOUT_KINDS``).
LAYOUTS = {
    "fr": "CFANet-FR (full-reference TOPIQ-FR: use TOPIQLoss)",
    "nr": "CFANet-NR quality (no-reference TOPIQ-NR: use TOPIQNRLoss)",
    "iaa": "CFANet-NR aesthetics (TOPIQ-IAA, AVA: use TOPIQNRLoss)",
    "nr_swin": "CFANet-NR quality with a Swin-B backbone (TOPIQ-NR Swin: use TOPIQNRLoss)",
    "iaa_swin": "CFANet-NR aesthetics with a Swin-B backbone (TOPIQ-IAA Swin, AVA: use TOPIQNRLoss)",
}

#: A key only the Swin-B layouts hold (the original Swin's module tree).
_SWIN_KEY = "semantic_model.layers.0.blocks.0.attn.qkv.weight"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (its ``params`` dict, or its own), read and checked by ``read_weights_file``."""
    # The limit is looked up at call time, so it can be lowered (tests do).
    return read_weights_file(path, "a trained CFANet", max_bytes=MAX_CHECKPOINT_BYTES)


def checkpoint_layout(state: Mapping[str, torch.Tensor]) -> str | None:
    """The key of :data:`LAYOUTS` a state dict's tensors fit, or None. Aesthetics is told by the position
    embedding's width (``h_emb`` (1, 256, 32, 1): token width 512), Swin by its blocks' keys."""
    emb = state.get("h_emb")
    if "weight_pool.0.0.weight" in state:
        return "fr"
    if "weight_pool.0.splitconv.weight" in state and isinstance(emb, torch.Tensor) and emb.dim() == 4:
        layout = "iaa" if emb.shape[1] == 256 else "nr"
        return f"{layout}_swin" if _SWIN_KEY in state else layout
    return None


def _first(names: list[str], n: int) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_state_dict_checked(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``net.load_state_dict(state, strict=True)`` with one readable error on mismatch."""
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        want, got = checkpoint_layout(own), checkpoint_layout(state)
        if want is not None and got is not None and want != got:
            raise WeightsError(f"{source} is a {LAYOUTS[got]} checkpoint, not a {LAYOUTS[want]} one")
        found = (("missing keys", missing, 5), ("unexpected keys", unexpected, 5), ("shape mismatches", shapes, 3))
        parts = [f"{len(keys)} {what} ({_first(keys, n)})" for what, keys, n in found if keys]
        kind = LAYOUTS[want].split(" (")[0] if want is not None else type(net).__name__
        backbone = "Swin-B" if want is not None and want.endswith("_swin") else "ResNet50"
        raise WeightsError(f"{source} is not a {kind} (TOPIQ, {backbone}) checkpoint: " + "; ".join(parts))
    try:
        net.load_state_dict(state, strict=True)
    except WeightsError as exc:  # a network's own load check (e.g. Swin's fixed buffers)
        raise WeightsError(f"{source}: {exc}") from None
