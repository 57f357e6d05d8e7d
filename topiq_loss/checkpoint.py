"""Checkpoint files: read safely, validate the tensors, tell the layout, load strictly.

The only module of the weights path that knows CFANet's key names.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from .weights import WeightsError

__all__ = ["LAYOUTS", "MAX_CHECKPOINT_BYTES", "checkpoint_layout", "load_state_dict_checked", "read_state_dict"]


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: its ``params`` dict, or the file's own dict.

    Loaded with ``torch.load(weights_only=True)``: pickled code is refused.

    Raises:
        FileNotFoundError: no such file.
        WeightsError: empty, unreadable, refused, or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`weights` file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"`weights` file {path} is empty")
    _check_record_sizes(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"`weights` file {path} was refused: it is not a plain tensor checkpoint "
            f"(loaded with weights_only=True, which never runs pickled code): {exc}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - weights_only ran no code; any failure means a bad file
        raise WeightsError(
            f"`weights` file {path} is not a readable PyTorch checkpoint "
            f"({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("params"), Mapping):
        obj = obj["params"]
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"`weights` file {path} holds {type(obj).__name__}, expected a state dict "
            f"(a dict of tensors, or a dict with key 'params')"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"`weights` file {path}: {len(bad)} entries are not named tensors, e.g. {bad[:3]}"
        )
    for key, value in obj.items():
        problem = _tensor_problem(key, value)
        if problem is not None:
            raise WeightsError(f"`weights` file {path}: tensor {key!r} {problem}; it cannot be a trained CFANet")
    return dict(obj)


#: Sum of a checkpoint's record sizes above which it is refused before loading (the
#: largest official CFANet file holds about 280 MiB of tensors).
MAX_CHECKPOINT_BYTES = 400 * 2**20
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_record_sizes(path: Path) -> None:
    """Refuse a zip checkpoint whose records would expand past MAX_CHECKPOINT_BYTES, before
    torch.load materialises them (a compressed bomb costs memory, not disk)."""
    if not zipfile.is_zipfile(path):
        return  # legacy formats: torch.load refuses or reads them
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(f"`weights` file {path} is not a readable checkpoint archive ({exc})") from None
    if total > MAX_CHECKPOINT_BYTES:
        raise WeightsError(
            f"`weights` file {path} would expand to {total} bytes of records, more than any CFANet "
            f"checkpoint ({MAX_CHECKPOINT_BYTES} at most); refused before loading"
        )


def _tensor_problem(key: str, t: torch.Tensor) -> str | None:
    """Why tensor ``key`` cannot come from a trained CFANet (None if it can)."""
    if t.is_meta or t.device.type == "meta":
        return "is on the meta device (no data)"
    if t.layout != torch.strided:
        return f"has layout {t.layout} (expected dense)"
    if t.is_quantized:
        return f"is quantized ({t.dtype})"
    if key.endswith("num_batches_tracked"):
        return None if t.dtype in (torch.int64, torch.int32) or t.is_floating_point() else f"has dtype {t.dtype}"
    if t.dtype not in _FLOAT_DTYPES:
        return f"has dtype {t.dtype} (expected floating point)"
    if not bool(torch.isfinite(t).all()):
        return "holds NaN or inf values"
    return None


def _first(names: list[str], n: int = 5) -> str:
    more = f", ... ({len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


#: Checkpoint layouts, told apart by their tensors.
LAYOUTS = {
    "fr": "CFANet-FR (full-reference TOPIQ-FR: use TOPIQLoss)",
    "nr": "CFANet-NR quality (no-reference TOPIQ-NR: use TOPIQNRLoss)",
    "iaa": "CFANet-NR aesthetics (TOPIQ-IAA, AVA: use TOPIQNRLoss)",
}


def checkpoint_layout(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"fr"``, ``"nr"`` or ``"iaa"`` from a state dict's tensors; None if none fits."""
    emb = state.get("h_emb")
    if "weight_pool.0.0.weight" in state:
        return "fr"
    if "weight_pool.0.splitconv.weight" in state and isinstance(emb, torch.Tensor) and emb.dim() == 4:
        return "iaa" if emb.shape[1] == 256 else "nr"
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
        raise WeightsError(f"{source} is not a {kind} (TOPIQ, ResNet50) checkpoint: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)
