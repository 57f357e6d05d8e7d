"""Where ``weights=`` leads: the cache, the download of official files, the checks.

Files go to ``<torch.hub.get_dir()>/checkpoints`` (so ``TORCH_HOME`` is honoured),
next to torch.hub's own downloads. A download (:mod:`~topiq_loss.weights.download`) is
accepted only if :mod:`~topiq_loss.weights.integrity` accepts its digest; a cached file, and a
path named like an official file, is re-hashed once per process before it is trusted.
Reading the tensors is :mod:`~topiq_loss.weights.checkpoint`'s work.
"""

from __future__ import annotations

import http.client
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from . import download, integrity
from .checkpoint import checkpoint_layout, load_state_dict_checked, read_state_dict
from .download import MIRROR_ENV, DownloadError
from .integrity import PINS_ENV, Expected, Refused, redact
from .reader import classify_weights
from .registry import RANDOM, REGISTRY, WEIGHTS, WeightsEntry, WeightsError, entry_for_file, get_weights_entry

__all__ = [
    "MIRROR_ENV",
    "WeightsError",
    "checkpoint_layout",
    "default_cache_dir",
    "download_weights",
    "load_state_dict_checked",
    "read_state_dict",
    "resolve_weights",
]

logger = logging.getLogger(__name__)

# path -> (size, mtime_ns) of files whose hash was checked in this process.
_verified: dict[str, tuple[int, int]] = {}
# file names for which the "prefix only" warning was given in this process.
_prefix_warned: set[str] = set()


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


def _check_once(path: Path, entry: WeightsEntry, known: Expected | None = None) -> None:
    """:func:`integrity.verify`, skipped for a file already verified unchanged in this process."""
    if _verified.get(str(path)) == _stat_key(path):
        return
    integrity.verify(path, entry, known)
    _verified[str(path)] = _stat_key(path)


def _cached_file_ok(path: Path, entry: WeightsEntry, known: Expected) -> bool:
    """True if ``path`` exists and its hash is acceptable; a bad file is removed, with a warning."""
    if not path.is_file():
        return False
    try:
        _check_once(path, entry, known)
        return True
    except Refused as exc:
        problem = exc.problem
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


def _is_official(url: str, entry: WeightsEntry) -> bool:
    return url in entry.urls and url.startswith("https://")


def _fetch(url: str, dest: Path, entry: WeightsEntry, known: Expected, progress: bool) -> None:
    """Download ``url`` into ``dest`` if its digest is acceptable; record or warn."""

    def accept(digest: str) -> None:
        problem = integrity.digest_problem(digest, entry, dest, known)
        if problem is not None:
            raise WeightsError(problem)

    digest = download.fetch(url, dest, entry.max_bytes, accept, progress)
    _verified[str(dest)] = _stat_key(dest)
    if _is_official(url, entry):
        integrity.write_record(dest, digest)  # later loads check the full digest
    elif known.full is None and entry.filename not in _prefix_warned:
        _prefix_warned.add(entry.filename)
        warnings.warn(
            f"{entry.filename} came from {redact(url)}, not an official HTTPS host, and only "
            f"the 32-bit sha256 prefix in its name was checked. Pin it: put the line\n"
            f"  {digest}  {entry.filename}\ninto a file named by {PINS_ENV} once you have "
            f"verified it (e.g. against a copy from the official release).",
            RuntimeWarning,
            stacklevel=4,
        )


def _prepare_folder(folder: Path, dest: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache folder {folder} ({exc}): {_way_out(dest)}") from None
    if not folder.is_dir():
        raise WeightsError(f"the weights cache {folder} is not a folder: {_way_out(dest)}")


def download_weights(
    name: str | WeightsEntry,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Path of the verified checkpoint ``name`` in the cache, downloading it if needed.

    Tries ``$TOPIQ_LOSS_MIRROR/<filename>`` (when set), then the GitHub release,
    then the Hugging Face mirror. A file is accepted when its sha256 equals a pin
    (``TOPIQ_LOSS_PINS`` or the entry's ``sha256``), or else starts with the name's
    prefix and equals the digest recorded at its first official download. The pins
    file and the mirror URL are checked before anything is downloaded.

    Args:
        name: registry key (``"kadid"``, ``"koniq"``, ...) or a :class:`WeightsEntry`.
        cache_dir: folder for the file; default :func:`default_cache_dir`.
        progress: show a tqdm progress bar (on a terminal).

    Raises:
        WeightsError: no URL gave an acceptable file, the cache cannot be used, or
            the pins file or mirror URL is malformed; the message names the URLs
            (without credentials), the cache path to place the file by hand and
            ``weights=``.
    """
    if isinstance(name, WeightsEntry):
        entry = name
    else:
        entry = get_weights_entry(name, REGISTRY)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = folder / entry.filename
    known = integrity.expected(entry, dest)  # a bad pins file stops us before any download
    if folder.is_dir() and _cached_file_ok(dest, entry, known):
        return dest
    try:
        mirror = download.mirror_url(entry.filename)
        _prepare_folder(folder, dest)
        with download.lock(Path(f"{dest}.lock"), _way_out(dest)):
            return _download_locked(entry, dest, [mirror] if mirror else [], progress)
    except DownloadError as exc:
        raise WeightsError(str(exc)) from None


def _download_locked(entry: WeightsEntry, dest: Path, mirrors: list[str], progress: bool) -> Path:
    """The download itself, under the lock: each URL in turn until one is accepted."""
    # Another process may have finished the download (and written a record) meanwhile.
    known = integrity.expected(entry, dest)
    if _cached_file_ok(dest, entry, known):
        return dest
    # Only the lock holder writes partial files: any left now were abandoned.
    download.remove_partials(dest)
    failures = []
    for url in [*mirrors, *entry.urls]:
        shown = redact(url)
        logger.info("downloading %s from %s", entry.filename, shown)
        try:
            _fetch(url, dest, entry, known, progress)
            return dest
        except PermissionError as exc:
            raise WeightsError(
                f"cannot write into the weights cache {dest.parent} ({exc.strerror}): {_way_out(dest)}"
            ) from None
        except (OSError, http.client.HTTPException, WeightsError, DownloadError, ValueError) as exc:
            reason = str(exc).replace(url, shown)
            logger.warning("download of %s failed: %s", shown, reason)
            failures.append(f"  {shown}: {reason}")
    tried = "\n".join(failures)
    raise WeightsError(
        f"Could not download the TOPIQ weights {entry.name!r} ({entry.filename}).\n"
        f"Tried:\n{tried}\n"
        f"To work offline, fetch the file on a connected machine and place it at\n  {dest}\n"
        f"or pass weights='/path/to/{entry.filename}', or set {MIRROR_ENV} to a base URL "
        f"that serves it."
    )


def _check_named_path(path: Path, entry: WeightsEntry) -> None:
    """A file named like an official one is held to that file's pin, record and prefix."""
    try:
        _check_once(path, entry)
    except Refused as exc:
        raise WeightsError(
            f"`weights` file {path} was refused: {exc.problem}. It is named like the official "
            f"{entry.name!r} checkpoint and is checked as such: if it is another file, rename it."
        ) from None


def resolve_weights(
    weights: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    registry: Mapping[str, WeightsEntry] = WEIGHTS,
) -> tuple[dict[str, torch.Tensor] | None, str, WeightsEntry | None]:
    """State dict, a description and the registry entry of a ``weights=``.

    Registry names download (or reuse) the official file. Any other string or path
    is loaded as a local file; if its name is an official file name, it is checked
    like a cached file (pin, record, prefix) and, when that entry is in ``registry``,
    the entry comes back too (so its resize and score range apply). ``"random"`` or
    ``None`` returns ``(None, "random init", None)``: random initialisation.

    Raises:
        WeightsArgumentError: (a ValueError) an empty string, a folder, an unknown name.
        WeightsFileNotFoundError: (a FileNotFoundError) no such file.
        TypeError: ``weights`` is neither a string, a path nor None.
        WeightsError: the file or download is refused.
    """
    expected = f"one of {sorted(registry)}, a path to a checkpoint file, or {RANDOM!r}"
    what, value = classify_weights(weights, registry, expected)
    if what == "random":
        return None, "random init", None
    if what == "name":
        entry = registry[str(value)]
        path = download_weights(entry, cache_dir=cache_dir, progress=progress)
        return read_state_dict(path), f"official {value!r} weights ({path})", entry
    path = Path(str(value))
    named = entry_for_file(path.name, {**REGISTRY, **registry})
    if named is not None:
        _check_named_path(path, named)
    state = read_state_dict(path)
    return state, f"`weights` file {path}", named if named in registry.values() else None
