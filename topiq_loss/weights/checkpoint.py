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


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: its ``params`` dict, or the file's own dict.

    Read by :func:`topiq_loss.weights.reader.read_weights_file`, the reader of every
    weights file: pickled code is refused, every tensor is checked (finite, dense,
    floating point but for Swin's relative position indices, BatchNorm variances >= 0).

    Raises:
        FileNotFoundError: no such file (a :class:`WeightsError` too).
        WeightsError: empty, unreadable, refused, not a dict of tensors, or a tensor
            no trained CFANet can hold; the message names the file and the key.
    """
    # Looked up at call time, so the limit can be lowered (tests do).
    return read_weights_file(path, "a trained CFANet", max_bytes=MAX_CHECKPOINT_BYTES)


#: Sum of a checkpoint's record sizes above which it is refused before loading (the
#: largest official CFANet file, the Swin-B aesthetics model, holds about 484 MiB of tensors).
MAX_CHECKPOINT_BYTES = MAX_WEIGHTS_BYTES


def _first(names: list[str], n: int = 5) -> str:
    more = f", ... ({len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


#: Checkpoint layouts, told apart by their tensors (the kind of each:
#: :data:`~topiq_loss.weights.registry.LAYOUT_KINDS`).
LAYOUTS = {
    "fr": "CFANet-FR (full-reference TOPIQ-FR: use TOPIQLoss)",
    "nr": "CFANet-NR quality (no-reference TOPIQ-NR: use TOPIQNRLoss)",
    "iaa": "CFANet-NR aesthetics (TOPIQ-IAA, AVA: use TOPIQNRLoss)",
    "nr_swin": "CFANet-NR quality with a Swin-B backbone (TOPIQ-NR Swin: use TOPIQNRLoss)",
    "iaa_swin": "CFANet-NR aesthetics with a Swin-B backbone (TOPIQ-IAA Swin, AVA: use TOPIQNRLoss)",
}

#: A key only the Swin-B layouts hold (the original Swin's module tree).
_SWIN_KEY = "semantic_model.layers.0.blocks.0.attn.qkv.weight"


def checkpoint_layout(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"fr"``, ``"nr"``, ``"iaa"``, ``"nr_swin"`` or ``"iaa_swin"`` from a state dict's
    tensors; None if none fits. Aesthetics is told by the position embedding's width
    (``h_emb`` (1, 256, 32, 1): token width 512), Swin by its blocks' keys."""
    emb = state.get("h_emb")
    if "weight_pool.0.0.weight" in state:
        return "fr"
    if "weight_pool.0.splitconv.weight" in state and isinstance(emb, torch.Tensor) and emb.dim() == 4:
        layout = "iaa" if emb.shape[1] == 256 else "nr"
        return f"{layout}_swin" if _SWIN_KEY in state else layout
    return None


def load_state_dict_checked(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``net.load_state_dict(state, strict=True)`` with one readable error on mismatch."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        want, got = checkpoint_layout(own), checkpoint_layout(state)
        if want is not None and got is not None and want != got:
            raise WeightsError(f"{source} is a {LAYOUTS[got]} checkpoint, not a {LAYOUTS[want]} one")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_first(shapes, 3)})")
        kind = LAYOUTS[want].split(" (")[0] if want is not None else type(net).__name__
        backbone = "Swin-B" if want is not None and want.endswith("_swin") else "ResNet50"
        raise WeightsError(f"{source} is not a {kind} (TOPIQ, {backbone}) checkpoint: " + "; ".join(parts))
    try:
        net.load_state_dict(state, strict=True)
    except WeightsError as exc:  # a network's own load check (e.g. Swin's fixed buffers)
        raise WeightsError(f"{source}: {exc}") from None
