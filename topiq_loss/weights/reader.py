"""Weights files: what a ``weights=`` value is, and the one reader of every file of tensors (TOPIQ and LPIPS
alike; :func:`check_tensors` for tensors from elsewhere). A bad file is a WeightsError naming it."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from .registry import WeightsArgumentError, WeightsError, WeightsFileNotFoundError, is_random

__all__ = ["MAX_WEIGHTS_BYTES", "check_tensors", "classify_weights", "read_weights_file"]

#: Sum of a file's record sizes above which it is refused before loading (the largest official file, the
#: Swin-B aesthetics model, holds about 484 MiB of tensors; an LPIPS-VGG state dict 60 MiB).
MAX_WEIGHTS_BYTES = 640 * 2**20
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def classify_weights(
    weights: object, names: Collection[str], expected: str
) -> tuple[Literal["random", "name", "file"], str | Path | None]:
    """What ``weights`` is: ``("random", None)``, ``("name", one of names)`` or ``("file", path)``; the errors
    (WeightsArgumentError, WeightsFileNotFoundError, TypeError) say it must be ``expected``."""
    if is_random(weights):
        return "random", None
    if isinstance(weights, str) and weights in names:
        return "name", weights
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"`weights` must be {expected}; got {type(weights).__name__}")
    text = os.fspath(weights)
    if not isinstance(text, str):
        raise TypeError(f"`weights` must be {expected}; got a bytes path")
    if not text.strip():
        # Path("") is ".", an existing folder: without this it is "not found: .".
        raise WeightsArgumentError(f"`weights` is an empty string; it must be {expected}")
    if "://" in text:
        # Path() would fold "https://host/f.pth" into "https:/host/f.pth" and report it missing.
        raise WeightsArgumentError(
            f"`weights` got the URL {text!r}, but URLs are not paths: `weights` must be {expected}. Download the "
            f"file and pass its path; for the official TOPIQ files, set TOPIQ_LOSS_MIRROR to a base URL serving their "
            f"file names instead (they are then downloaded into the weights cache: torch.hub's checkpoints folder, "
            f"or `cache_dir=`)"
        )
    path = Path(text)
    if path.is_file():
        return "file", path
    if path.is_dir():
        raise WeightsArgumentError(f"`weights` {path} is a folder, not a weights file; it must be {expected}")
    if path.exists():
        raise WeightsArgumentError(f"`weights` {path} is not a regular file; it must be {expected}")
    if isinstance(weights, str) and "/" not in text and os.sep not in text and "." not in text:
        raise WeightsArgumentError(f"`weights` must be {expected}; got {weights!r} (no such name, and no such file)")
    raise WeightsFileNotFoundError(f"`weights` file not found: {path}; `weights` must be {expected}")


def read_weights_file(
    path: str | os.PathLike[str], fits: str, source: str | None = None, max_bytes: int | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (its ``params`` dict, or its own), loaded with ``weights_only=True`` and
    checked; ``fits`` ("a trained CFANet") and ``source`` (default "`weights` file PATH") word the errors."""
    path = Path(path)
    where = source if source is not None else f"`weights` file {path}"
    if not path.is_file():
        raise WeightsFileNotFoundError(f"{where}: not found" if source is not None else f"`weights` file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"{where} is empty")
    _check_record_sizes(path, where, fits, MAX_WEIGHTS_BYTES if max_bytes is None else max_bytes)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{where} was refused: it is not a plain tensor checkpoint (loaded with weights_only=True, "
            f"which never runs pickled code): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - weights_only ran no code; any failure means a bad file
        raise WeightsError(f"{where} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("params"), Mapping):
        obj = obj["params"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("params_ema"), Mapping):
        # A BasicSR checkpoint saved with EMA only: which network was meant is the user's call.
        raise WeightsError(f"{where} holds 'params_ema' but no 'params': topiq_loss reads a plain state dict or its "
                           f"'params' entry. Save the weights you mean (here the 'params_ema' dict) as a file of "
                           f"their own, or under 'params'")
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{where} holds {type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}, "
                           f"expected a state dict (a dict of tensors, or a dict with key 'params')")
    return check_tensors(obj, where, fits)


def check_tensors(state: Mapping[Any, Any], source: str, fits: str) -> dict[str, torch.Tensor]:
    """``state`` as a dict if every entry is a named, dense, finite float tensor (integers only in
    ``num_batches_tracked`` and Swin's position indices), else a WeightsError naming ``source`` and the key."""
    if bad := [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]:
        raise WeightsError(f"{source}: {len(bad)} entries are not named tensors, e.g. {bad[:3]}")
    tensors: dict[str, torch.Tensor] = dict(state)
    for key, value in tensors.items():
        if (problem := _tensor_problem(key, value)) is not None:
            raise WeightsError(f"{source}: tensor {key!r} {problem}; it cannot be {fits}")
    return tensors


def _check_record_sizes(path: Path, where: str, fits: str, limit: int) -> None:
    """Refuse a zip whose records would expand past ``limit`` (a compressed bomb costs memory, not disk)."""
    if not zipfile.is_zipfile(path):
        return  # legacy formats: the loader refuses or reads them
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(f"{where} is not a readable weights archive ({exc})") from None
    if total > limit:
        raise WeightsError(f"{where} would expand to {total} bytes of records, more than {fits} needs "
                           f"({limit} at most); refused before loading")


def _tensor_problem(key: str, t: torch.Tensor) -> str | None:
    """Why tensor ``key`` cannot come from a trained network (None if it can)."""
    if t.is_meta or t.device.type == "meta":
        return "is on the meta device (no data)"
    if t.layout != torch.strided:
        return f"has layout {t.layout} (expected dense)"
    if t.is_quantized:
        return f"is quantized ({t.dtype})"
    if key.endswith("num_batches_tracked"):
        return None if t.dtype in (torch.int64, torch.int32) or t.is_floating_point() else f"has dtype {t.dtype}"
    if key.rsplit(".", 1)[-1] == "relative_position_index":
        if t.dtype not in (torch.int64, torch.int32):
            return f"has dtype {t.dtype} (a relative position index is int64)"
        if t.dim() != 2 or t.shape[0] != t.shape[1]:
            return f"has shape {tuple(t.shape)} (a relative position index is square, (L, L))"
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= 4 * t.shape[0]):
            return f"holds indices outside [0, {4 * t.shape[0]}) (a relative position index of {t.shape[0]} tokens)"
        return None
    if key.rsplit(".", 1)[-1] == "attn_mask" and t.dtype in _FLOAT_DTYPES:
        if t.dim() != 3 or t.shape[1] != t.shape[2]:
            return f"has shape {tuple(t.shape)} (a Swin attention mask is (windows, L, L))"
        if not bool(((t == 0) | (t == -100)).all()):
            return "holds values other than 0 and -100 (a Swin attention mask holds only those)"
        return None
    if t.dtype not in _FLOAT_DTYPES:
        return f"has dtype {t.dtype} (expected floating point)"
    if not bool(torch.isfinite(t).all()):
        return "holds NaN or inf values"
    if key.endswith("running_var") and bool((t < 0).any()):
        # A variance is never negative; loaded, it makes every BatchNorm output NaN.
        return f"holds negative values (min {float(t.min()):.3g}; a BatchNorm running variance is >= 0)"
    return None
