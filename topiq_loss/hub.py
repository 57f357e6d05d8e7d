"""Download, verify, cache and load CFANet-FR checkpoints.

Files go to ``<torch.hub.get_dir()>/checkpoints`` (so ``TORCH_HOME`` is honoured),
next to torch.hub's own downloads. A download is written to a ``.partial`` file,
checked against the sha256 prefix in the file name and renamed into place, under
a lock file (``<file>.lock``) so that concurrent processes download once. A cached
file is re-hashed once per process before it is trusted.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pickle
import urllib.request
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path

import filelock
import torch
import torch.nn as nn

from .weights import WEIGHTS, WeightsEntry, get_weights_entry

__all__ = [
    "WeightsError",
    "MIRROR_ENV",
    "default_cache_dir",
    "download_weights",
    "read_state_dict",
    "load_state_dict_checked",
    "resolve_weights",
    "checkpoint_layout",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a base URL tried before the official hosts.
MIRROR_ENV = "TOPIQ_LOSS_MIRROR"
_CHUNK = 1 << 20
_TIMEOUT_S = 30.0
_LOCK_TIMEOUT_S = 1800.0

# path -> (size, mtime_ns) of files whose hash was checked in this process.
_verified: dict[str, tuple[int, int]] = {}


class WeightsError(RuntimeError):
    """A checkpoint could not be downloaded, verified or loaded."""


def default_cache_dir() -> Path:
    """``<torch.hub.get_dir()>/checkpoints``; follows ``TORCH_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _cached_file_ok(path: Path, entry: WeightsEntry) -> bool:
    """True if ``path`` exists and its hash matches; a bad file is removed, with a warning."""
    if not path.is_file():
        return False
    if _verified.get(str(path)) == _stat_key(path):
        return True
    digest = _sha256(path)
    if digest.startswith(entry.sha256_prefix):
        _verified[str(path)] = _stat_key(path)
        return True
    warnings.warn(
        f"Cached TOPIQ weights {path} are corrupt (sha256 {digest[:8]}..., expected "
        f"{entry.sha256_prefix}...); removing and downloading again.",
        RuntimeWarning,
        stacklevel=3,
    )
    path.unlink(missing_ok=True)
    return False


def _candidate_urls(entry: WeightsEntry) -> list[str]:
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    urls = [f"{mirror.rstrip('/')}/{entry.filename}"] if mirror else []
    return urls + list(entry.urls)


def _fetch(url: str, dest: Path, entry: WeightsEntry, progress: bool) -> None:
    """Download ``url`` into ``dest`` atomically, checking the sha256 prefix."""
    tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    request = urllib.request.Request(url, headers={"User-Agent": "topiq_loss"})
    try:
        from tqdm.auto import tqdm

        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp, open(tmp, "wb") as out:
            total = resp.headers.get("Content-Length")
            h = hashlib.sha256()
            size = 0
            with tqdm(
                total=int(total) if total else None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.filename,
                disable=None if progress else True,
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            if total is not None and size != int(total):
                raise WeightsError(f"connection closed after {size} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if not digest.startswith(entry.sha256_prefix):
            raise WeightsError(
                f"sha256 mismatch: got {digest[:8]}..., expected {entry.sha256_prefix}..."
            )
        os.replace(tmp, dest)
        _verified[str(dest)] = _stat_key(dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_weights(
    name: str | WeightsEntry,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Path of the verified checkpoint ``name`` in the cache, downloading it if needed.

    Tries ``$TOPIQ_LOSS_MIRROR/<filename>`` (when set), then the GitHub release,
    then the Hugging Face mirror.

    Args:
        name: registry key (``"kadid"``, ``"pipal"``) or a :class:`WeightsEntry`.
        cache_dir: folder for the file; default :func:`default_cache_dir`.
        progress: show a tqdm progress bar (on a terminal).

    Raises:
        WeightsError: no URL gave a file with the right hash; the message names
            the URLs, the cache path to place the file by hand and ``weights=``.
    """
    entry = name if isinstance(name, WeightsEntry) else get_weights_entry(name)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / entry.filename
    if _cached_file_ok(dest, entry):
        return dest
    with filelock.FileLock(str(dest) + ".lock", timeout=_LOCK_TIMEOUT_S):
        # Another process may have finished the download while we waited.
        if _cached_file_ok(dest, entry):
            return dest
        # Only the lock holder writes partial files: any left now were abandoned by a
        # process killed mid-download.
        for stale in folder.glob(f"{entry.filename}.*.partial"):
            stale.unlink(missing_ok=True)
        failures = []
        for url in _candidate_urls(entry):
            logger.info("downloading %s from %s", entry.filename, url)
            try:
                _fetch(url, dest, entry, progress)
                return dest
            except (OSError, http.client.HTTPException, WeightsError, ValueError) as exc:
                logger.warning("download of %s failed: %s", url, exc)
                failures.append(f"  {url}: {exc}")
    tried = "\n".join(failures)
    raise WeightsError(
        f"Could not download the TOPIQ weights {entry.name!r} ({entry.filename}).\n"
        f"Tried:\n{tried}\n"
        f"To work offline, fetch the file on a connected machine and place it at\n  {dest}\n"
        f"or pass weights='/path/to/{entry.filename}', or set {MIRROR_ENV} to a base URL "
        f"that serves it."
    )


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
    return dict(obj)


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


def resolve_weights(
    weights: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    registry: Mapping[str, WeightsEntry] = WEIGHTS,
) -> tuple[dict[str, torch.Tensor] | None, str, WeightsEntry | None]:
    """State dict, a description and the registry entry (None for files) of a ``weights=``.

    Registry names download (or reuse) the official file; any other string or path
    is loaded as a local file; ``None`` returns ``(None, ..., None)`` for random init.
    """
    if weights is None:
        return None, "random init", None
    if isinstance(weights, str) and weights in registry:
        entry = registry[weights]
        path = download_weights(entry, cache_dir=cache_dir, progress=progress)
        return read_state_dict(path), f"official {weights!r} weights ({path})", entry
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if not path.exists() and isinstance(weights, str) and os.sep not in weights and "." not in weights:
            get_weights_entry(weights, registry)  # raises, listing the valid names
        return read_state_dict(path), f"`weights` file {path}", None
    raise TypeError(
        f"`weights` must be one of {sorted(registry)}, a path, or None; got {type(weights).__name__}"
    )
