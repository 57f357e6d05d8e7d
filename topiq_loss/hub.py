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
import socket
import time
import urllib.request
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path

import filelock
import torch
import torch.nn as nn

from .integrity import (
    PINS_ENV,
    IntegrityError,
    expected_digest,
    read_record,
    record_path,
    redact,
    sha256_file,
    write_record,
)
from .weights import NR_WEIGHTS, WEIGHTS, WeightsEntry, get_weights_entry

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
#: A transfer slower than _MIN_RATE bytes/s over a _RATE_WINDOW_S window is aborted, so
#: a trickling server cannot hold the download (and the lock) indefinitely.
_MIN_RATE = 16 * 1024
_RATE_WINDOW_S = 60.0
#: How long a process waits for another one's download, and how often it says so.
_LOCK_TIMEOUT_S = 1800.0
_LOCK_POLL_S = 15.0

# path -> (size, mtime_ns) of files whose hash was checked in this process.
_verified: dict[str, tuple[int, int]] = {}
# file names for which the "prefix only" warning was given in this process.
_prefix_warned: set[str] = set()


class WeightsError(RuntimeError):
    """A checkpoint could not be downloaded, verified or loaded."""


def default_cache_dir() -> Path:
    """``<torch.hub.get_dir()>/checkpoints``; follows ``TORCH_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _way_out(dest: Path) -> str:
    return (
        f"set TORCH_HOME to a writable folder, pass cache_dir=..., or download "
        f"{dest.name} yourself and pass weights='/path/to/{dest.name}'"
    )


def _expected(entry: WeightsEntry, dest: Path) -> tuple[str | None, str, str | None]:
    """The pinned digest and its source (None, "" if unpinned), and the recorded digest."""
    try:
        full, source = expected_digest(entry)
        return full, source, read_record(dest)
    except IntegrityError as exc:
        raise WeightsError(str(exc)) from None


def _digest_problem(
    digest: str, entry: WeightsEntry, dest: Path, expected: tuple[str | None, str, str | None] | None = None
) -> str | None:
    """Why ``digest`` is not acceptable for ``entry`` (None if it is); ``expected`` as
    :func:`_expected` returns it, read here when not given."""
    full, source, record = expected if expected is not None else _expected(entry, dest)
    if full is not None:
        return None if digest == full else f"sha256 {digest} differs from the one pinned in {source} ({full})"
    if not digest.startswith(entry.sha256_prefix):
        return f"sha256 {digest[:8]}... does not start with the published prefix {entry.sha256_prefix}"
    if record is not None and digest != record:
        return (
            f"sha256 {digest} differs from the digest recorded at its first official download "
            f"({record}, in {record_path(dest)})"
        )
    return None


def _cached_file_ok(path: Path, entry: WeightsEntry) -> bool:
    """True if ``path`` exists and its hash is acceptable; a bad file is removed, with a warning."""
    if not path.is_file():
        return False
    if _verified.get(str(path)) == _stat_key(path):
        return True
    problem = _digest_problem(sha256_file(path), entry, path)
    if problem is None:
        _verified[str(path)] = _stat_key(path)
        return True
    warnings.warn(
        f"Cached TOPIQ weights {path} were refused ({problem}); removing and downloading again.",
        RuntimeWarning,
        stacklevel=3,
    )
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot remove the refused file {path} ({exc}): {_way_out(path)}") from None
    return False


def _candidate_urls(entry: WeightsEntry) -> list[str]:
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    urls = [f"{mirror.rstrip('/')}/{entry.filename}"] if mirror else []
    return urls + list(entry.urls)


def _is_official(url: str, entry: WeightsEntry) -> bool:
    return url in entry.urls and url.startswith("https://")


def _fetch(url: str, dest: Path, entry: WeightsEntry, progress: bool) -> None:
    """Download ``url`` into ``dest`` atomically: size cap, rate floor, digest checks."""
    tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.partial")
    request = urllib.request.Request(url, headers={"User-Agent": "topiq_loss"})
    try:
        from tqdm.auto import tqdm

        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
            total = resp.headers.get("Content-Length")
            if total is not None and int(total) > entry.max_bytes:
                raise WeightsError(f"server announces {int(total)} bytes, more than the {entry.max_bytes} expected at most")
            h = hashlib.sha256()
            size = 0
            window_start, window_bytes = time.monotonic(), 0
            with open(tmp, "wb") as out, tqdm(
                total=int(total) if total else None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=entry.filename,
                disable=None if progress else True,
            ) as bar:
                # read1: returns what has arrived, so the checks below run while a
                # slow server trickles bytes.
                while chunk := resp.read1(_CHUNK):
                    size += len(chunk)
                    if size > entry.max_bytes:
                        raise WeightsError(f"more than the {entry.max_bytes} bytes expected at most; aborted")
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
                    window_bytes += len(chunk)
                    elapsed = time.monotonic() - window_start
                    if elapsed >= _RATE_WINDOW_S:
                        if window_bytes < _MIN_RATE * elapsed:
                            raise WeightsError(
                                f"transfer too slow ({window_bytes} bytes in {elapsed:.0f} s, under "
                                f"{_MIN_RATE} bytes/s); aborted"
                            )
                        window_start, window_bytes = time.monotonic(), 0
                if total is not None and size != int(total):
                    raise WeightsError(f"connection closed after {size} of {total} bytes")
                out.flush()
                os.fsync(out.fileno())
        digest = h.hexdigest()
        expected = _expected(entry, dest)  # read once: the pins file and the record
        problem = _digest_problem(digest, entry, dest, expected)
        if problem is not None:
            raise WeightsError(problem)
        os.replace(tmp, dest)
        _verified[str(dest)] = _stat_key(dest)
        full = expected[0]
        if _is_official(url, entry):
            write_record(dest, digest)  # later loads check the full digest
        elif full is None and entry.filename not in _prefix_warned:
            _prefix_warned.add(entry.filename)
            warnings.warn(
                f"{entry.filename} came from {redact(url)}, not an official HTTPS host, and only "
                f"the 32-bit sha256 prefix in its name was checked. Pin it: put the line\n"
                f"  {digest}  {entry.filename}\ninto a file named by {PINS_ENV} once you have "
                f"verified it (e.g. against a copy from the official release).",
                RuntimeWarning,
                stacklevel=4,
            )
    finally:
        tmp.unlink(missing_ok=True)


def _prepare_folder(folder: Path, dest: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache folder {folder} ({exc}): {_way_out(dest)}") from None
    if not folder.is_dir():
        raise WeightsError(f"the weights cache {folder} is not a folder: {_way_out(dest)}")


def _acquire(lock_path: Path, dest: Path) -> filelock.BaseFileLock:
    """The download lock; a wait says who holds it, and ends in a WeightsError."""
    if lock_path.is_symlink() or (lock_path.exists() and not lock_path.is_file()):
        kind = "a symbolic link" if lock_path.is_symlink() else "not a regular file"
        raise WeightsError(f"lock file {lock_path} is {kind}; remove it (no download is using it)")
    if not os.access(lock_path.parent, os.W_OK):
        raise WeightsError(f"the weights cache {lock_path.parent} is not writable: {_way_out(dest)}")
    lock = filelock.FileLock(str(lock_path), timeout=_LOCK_POLL_S)
    waited = 0.0
    while True:
        try:
            lock.acquire()
            break
        except filelock.Timeout:
            waited += _LOCK_POLL_S
            try:
                holder = lock_path.read_text()[:200].strip() or "another process"
            except OSError:
                holder = "another process"
            logger.warning("waited %.0f s for %s, held by %s", waited, lock_path, holder)
            if waited >= _LOCK_TIMEOUT_S:
                raise WeightsError(
                    f"gave up after {waited:.0f} s waiting for the lock file {lock_path}, held by "
                    f"{holder}. If no download is running, delete the lock file."
                ) from None
        except OSError as exc:
            raise WeightsError(f"cannot use the lock file {lock_path} ({exc}): {_way_out(dest)}") from None
    try:
        lock_path.write_text(
            f"pid {os.getpid()} on {socket.gethostname()}, downloading {dest.name} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
        )
    except OSError:
        pass  # the description is a courtesy to waiters
    return lock


def download_weights(
    name: str | WeightsEntry,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Path of the verified checkpoint ``name`` in the cache, downloading it if needed.

    Tries ``$TOPIQ_LOSS_MIRROR/<filename>`` (when set), then the GitHub release,
    then the Hugging Face mirror. A file is accepted when its sha256 equals a pin
    (``TOPIQ_LOSS_PINS`` or the entry's ``sha256``), or else starts with the name's
    prefix and equals the digest recorded at its first official download.

    Args:
        name: registry key (``"kadid"``, ``"koniq"``, ...) or a :class:`WeightsEntry`.
        cache_dir: folder for the file; default :func:`default_cache_dir`.
        progress: show a tqdm progress bar (on a terminal).

    Raises:
        WeightsError: no URL gave an acceptable file, or the cache cannot be used;
            the message names the URLs (without credentials), the cache path to place
            the file by hand and ``weights=``.
    """
    if isinstance(name, WeightsEntry):
        entry = name
    else:
        entry = get_weights_entry(name, {**WEIGHTS, **NR_WEIGHTS})
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = folder / entry.filename
    if folder.is_dir() and _cached_file_ok(dest, entry):
        return dest
    _prepare_folder(folder, dest)
    lock = _acquire(Path(str(dest) + ".lock"), dest)
    failures = []
    try:
        # Another process may have finished the download while we waited.
        if _cached_file_ok(dest, entry):
            return dest
        # Only the lock holder writes partial files: any left now were abandoned by a
        # process killed mid-download.
        for stale in folder.glob(f"{entry.filename}.*.partial"):
            stale.unlink(missing_ok=True)
        for url in _candidate_urls(entry):
            shown = redact(url)
            logger.info("downloading %s from %s", entry.filename, shown)
            try:
                _fetch(url, dest, entry, progress)
                return dest
            except PermissionError as exc:
                raise WeightsError(f"cannot write into the weights cache {folder} ({exc.strerror}): {_way_out(dest)}") from None
            except (OSError, http.client.HTTPException, WeightsError, ValueError) as exc:
                reason = str(exc).replace(url, shown)
                logger.warning("download of %s failed: %s", shown, reason)
                failures.append(f"  {shown}: {reason}")
    finally:
        lock.release()
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
    import zipfile

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
