"""Where ``weights=`` leads: the caches a user already has, then the Hub, a mirror, the release.

A file is looked for, before any request, in this library's cache (``<torch hub
dir>/checkpoints``), pyiqa's (``<torch hub dir>/pyiqa``) and the Hugging Face Hub cache.
Then it is fetched from ``$TOPIQ_LOSS_MIRROR``, the Hub (``huggingface_hub.hf_hub_download``:
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME``, tokens and proxies are its own) and the
GitHub release (``torch.hub.download_url_to_file``, under a file lock). Wherever it comes
from, its sha256 must equal a pin (``TOPIQ_LOSS_PINS`` or the entry's ``sha256``), or else
start with the prefix in its name and, for a Hub file, equal the digest the Hub announced
(the name of its blob: ``hf_hub_download`` does not compare them itself).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from .._errors import DownloadError  # noqa: F401 - 0.4's topiq_loss.download name (an alias of this module)
from .checkpoint import checkpoint_layout, load_state_dict_checked, read_state_dict
from .env import env_value
from .reader import classify_weights
from .registry import RANDOM, REGISTRY, WeightsEntry, WeightsError, entry_for_file, get_weights_entry

__all__ = [
    "MIRROR_ENV",
    "PINS_ENV",
    "WeightsError",
    "checkpoint_layout",
    "default_cache_dir",
    "digest_problem",
    "download_weights",
    "load_state_dict_checked",
    "pinned",
    "pyiqa_cache_dir",
    "read_pins",
    "read_state_dict",
    "redact",
    "resolve_weights",
    "sha256_file",
    "verify",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a base URL tried before the official sources.
MIRROR_ENV = "TOPIQ_LOSS_MIRROR"
#: Environment variable naming a sha256sum-format file of pinned digests.
PINS_ENV = "TOPIQ_LOSS_PINS"
#: How long a process waits for another one's download of the same file.
LOCK_TIMEOUT_S = 1800.0
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# path -> (size, mtime_ns) of files accepted in this process: hashed once while unchanged.
_checked: dict[str, tuple[int, int]] = {}


def default_cache_dir() -> Path:
    """``<torch.hub.get_dir()>/checkpoints``; follows ``TORCH_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def pyiqa_cache_dir() -> Path:
    """Where pyiqa keeps these same files: ``<torch.hub.get_dir()>/pyiqa``."""
    return Path(torch.hub.get_dir()) / "pyiqa"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_pins(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{file name: digest}`` from a ``sha256sum`` file (UTF-8, ``#`` comments and blank lines skipped).

    Raises:
        WeightsError: unreadable, not UTF-8, a malformed line, or one name pinned to two
            digests; the message names the file and the line.
    """
    where = f"{PINS_ENV} file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeError) as exc:
        raise WeightsError(f"{where} cannot be read as UTF-8 text of '<64 hex digits>  <file name>' lines ({exc})") from None
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise WeightsError(f"{where}, line {number}: expected '<64 hex digits>  <file name>'; got {line[:80]!r}")
        name, digest = Path(match.group(2)).name, match.group(1).lower()
        if pins.setdefault(name, digest) != digest:
            raise WeightsError(f"{where}, line {number}: {name} is pinned to a second digest; keep the right one")
    return pins


def pinned(entry: WeightsEntry) -> tuple[str | None, str]:
    """The full digest pinned for ``entry``'s file and where the pin is; ``(None, "")`` if none."""
    pins_file = env_value(PINS_ENV, str, WeightsError)
    if pins_file is not None and (digest := read_pins(pins_file).get(entry.filename)) is not None:
        return digest, f"{PINS_ENV} file {pins_file}"
    return (entry.sha256.lower(), f"the registry entry {entry.name!r}") if entry.sha256 else (None, "")


def digest_problem(digest: str, entry: WeightsEntry, announced: str | None = None) -> str | None:
    """Why a file of sha256 ``digest`` is not ``entry``'s (None if it is): a pin outranks
    everything; else the name's prefix and the digest the Hub ``announced``, if any."""
    full, source = pinned(entry)
    if full is not None:
        return None if digest == full else f"sha256 {digest} differs from the one pinned in {source} ({full})"
    if not digest.startswith(entry.sha256_prefix):
        return f"sha256 {digest[:8]}... does not start with the published prefix {entry.sha256_prefix}"
    if announced is not None and digest != announced:
        return f"sha256 {digest} differs from the digest the Hub announced for it ({announced})"
    return None


def _announced(path: Path) -> str | None:
    """The digest the Hub announced for a file of its cache: the name of the blob it links to."""
    name = Path(os.path.realpath(path)).name
    return name if _SHA256.fullmatch(name) else None


def verify(path: str | os.PathLike[str], entry: WeightsEntry) -> str:
    """Hash ``path`` and hold it to ``entry``'s pin, prefix and announced digest; return the sha256.

    Raises:
        WeightsError: the file is refused; the message names it and says why.
    """
    digest = sha256_file(path)
    problem = digest_problem(digest, entry, _announced(Path(path)))
    if problem is not None:
        raise WeightsError(f"{path} was refused: {problem}")
    return digest


def _problem(path: Path, entry: WeightsEntry) -> str | None:
    """:func:`verify`'s verdict as a phrase, remembered for the file while it is unchanged."""
    st = path.stat()
    if _checked.get(str(path)) == (st.st_size, st.st_mtime_ns):
        return None
    if st.st_size > entry.max_bytes:
        return f"{st.st_size} bytes, more than the {entry.max_bytes} expected at most"
    problem = digest_problem(sha256_file(path), entry, _announced(path))
    if problem is None:
        _checked[str(path)] = (st.st_size, st.st_mtime_ns)
    return problem


def _accepted(path: Path, entry: WeightsEntry, discard: Callable[[Path], None] | None) -> bool:
    """True if the cached ``path`` passes; otherwise warn, and ``discard`` it if it is ours to remove."""
    problem = _problem(path, entry)
    if problem is None:
        return True
    warnings.warn(
        f"Cached TOPIQ weights {path} were refused ({problem}); {'removed' if discard else 'skipped'}.",
        RuntimeWarning,
        stacklevel=4,
    )
    if discard is not None:
        discard(path)
    return False


def _remove_hub_file(path: Path) -> None:
    """The Hub cache's link and the blob it points to: nothing left that hf_hub_download would trust."""
    blob = Path(os.path.realpath(path))
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _from_caches(entry: WeightsEntry, folder: Path) -> Path | None:
    """A cached file that passes, before any request: ours, pyiqa's, then the Hub cache."""
    ours, pyiqa = folder / entry.filename, pyiqa_cache_dir() / entry.filename
    if ours.is_file() and _accepted(ours, entry, lambda p: p.unlink(missing_ok=True)):
        return ours
    if pyiqa.is_file() and _accepted(pyiqa, entry, None):
        return pyiqa
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(entry.hub_repo, entry.filename)
    if isinstance(hit, str) and _accepted(Path(hit), entry, _remove_hub_file):
        return Path(hit)
    return None


def _from_hub(entry: WeightsEntry) -> Path:
    from huggingface_hub import hf_hub_download

    path = Path(hf_hub_download(entry.hub_repo, entry.filename))
    problem = _problem(path, entry)
    if problem is not None:
        _remove_hub_file(path)
        raise WeightsError(f"the downloaded file was refused and removed: {problem}")
    return path


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A timeout on every socket operation of torch.hub's download (it takes none), when none is set."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(old if old is not None else seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _from_url(url: str, entry: WeightsEntry, folder: Path, progress: bool, timeout: float) -> Path:
    """``url`` into ``<folder>/<file>`` through a temporary file, renamed only once accepted."""
    import filelock

    dest = folder / entry.filename
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(f"{dest}.lock", timeout=LOCK_TIMEOUT_S):
            if dest.is_file() and _problem(dest, entry) is None:  # another process got it meanwhile
                return dest
            for stale in folder.glob(f"{dest.name}.*.download*"):  # only the lock holder writes them
                stale.unlink(missing_ok=True)
            tmp = dest.with_name(f"{dest.name}.{secrets.token_hex(8)}.download")
            try:
                with _socket_timeout(timeout):
                    torch.hub.download_url_to_file(url, str(tmp), progress=progress)
                problem = _problem(tmp, entry)
                if problem is not None:
                    raise WeightsError(problem)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
    except filelock.Timeout:
        raise WeightsError(
            f"gave up after {LOCK_TIMEOUT_S:.0f} s waiting for the lock file {dest}.lock; "
            f"if no download is running, delete it"
        ) from None
    st = dest.stat()
    _checked[str(dest)] = (st.st_size, st.st_mtime_ns)
    if pinned(entry)[0] is None:
        logger.warning(
            "%s came from %s: only the 8-hex prefix of its name was checked; `topiq-loss weights verify %s` "
            "prints the line that pins it in a %s file",
            entry.filename, redact(url), dest, PINS_ENV,
        )
    return dest


def _reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    cause = exc.__cause__
    return f"{first} ({_reason(cause)})" if cause is not None and str(cause) not in first else first


def download_weights(
    name: str | WeightsEntry,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Path of the checked file of ``name``: from a cache, or downloaded.

    Looks in ``cache_dir`` (default :func:`default_cache_dir`), pyiqa's cache and the Hub
    cache (``HF_HUB_CACHE``) before any request; then tries
    ``$TOPIQ_LOSS_MIRROR``, the Hugging Face Hub and the GitHub release, unless
    ``HF_HUB_OFFLINE`` is set. See the module's docstring for the checks.

    Args:
        name: registry key (``"kadid"``, ...) or a :class:`WeightsEntry` (its file name
            gives its sources).
        cache_dir: this library's cache: downloads from plain URLs go there (the Hub's
            go to its own cache).
        progress: show torch.hub's progress bar (the Hub's follows ``HF_HUB_DISABLE_PROGRESS_BARS``).

    Raises:
        WeightsError: no source gave an acceptable file, or the pins file or the mirror
            is malformed; the message names the file, the sources, the caches and the
            ways out.
    """
    entry = name if isinstance(name, WeightsEntry) else get_weights_entry(name, REGISTRY)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    pinned(entry)  # a bad pins file or mirror is named before any request
    mirror = mirror_url(entry.filename)
    found = _from_caches(entry, folder)
    if found is not None:
        return found
    from huggingface_hub import constants, hf_hub_url

    offline = bool(constants.HF_HUB_OFFLINE)
    timeout = float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    release = f"{entry.release}/{entry.filename}"
    hub = hf_hub_url(entry.hub_repo, entry.filename)
    sources: list[tuple[str, Callable[[], Path]]] = [] if mirror is None else [
        (redact(mirror), lambda: _from_url(mirror, entry, folder, progress, timeout))
    ]
    sources += [
        (f"{hub} (huggingface_hub)", lambda: _from_hub(entry)),
        (release, lambda: _from_url(release, entry, folder, progress, timeout)),
    ]
    failures = []
    for where, fetch in [] if offline else sources:
        logger.info("downloading %s from %s", entry.filename, where)
        try:
            return fetch()
        except Exception as exc:  # noqa: BLE001 - any failure of one source: the next one
            reason = _reason(exc) if mirror is None else _reason(exc).replace(mirror, redact(mirror))
            logger.warning("download of %s failed: %s", where, reason)
            failures.append(f"  {where}: {reason}")
    tried = "HF_HUB_OFFLINE is set: nothing was requested." if offline else "Tried:\n" + "\n".join(failures)
    raise WeightsError(
        f"Could not get the TOPIQ weights {entry.name!r} ({entry.filename}). {tried}\n"
        f"Its sources: {hub} (the Hugging Face Hub) and {release} (the GitHub release).\n"
        f"Looked in {folder}, {pyiqa_cache_dir()} (pyiqa's cache) and {constants.HF_HUB_CACHE} "
        f"(the Hub cache).\nTo work offline, fetch the file on a connected machine and place it at\n"
        f"  {folder / entry.filename}\nor pass weights='/path/to/{entry.filename}'; or set {MIRROR_ENV} to a "
        f"base URL that serves it, or HF_ENDPOINT to a Hub mirror" + (", and unset HF_HUB_OFFLINE." if offline else ".")
    )


def mirror_url(filename: str) -> str | None:
    """``$TOPIQ_LOSS_MIRROR`` with ``filename`` appended to its path (its query kept), or None.

    Raises:
        WeightsError: not an absolute URL, a port outside 1..65535, or credentials
            (``user:pass@``, which urllib never sends); the message names the variable.
    """
    parts = env_value(MIRROR_ENV, _mirror_base, WeightsError)
    if parts is None:
        return None
    path = parts.path.rstrip("/") + "/" + urllib.parse.quote(filename)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _mirror_base(base: str) -> urllib.parse.SplitResult:
    expected = "must be an absolute URL such as https://host/base"
    try:
        parts = urllib.parse.urlsplit(base)
    except ValueError as exc:
        raise ValueError(f"{expected}; got {redact(base)} ({exc})") from None
    if not parts.scheme or not (parts.netloc or parts.scheme == "file"):
        raise ValueError(f"{expected}; got {redact(base)}")
    host = parts.netloc.rpartition("@")[2]
    port = host.rpartition("]")[2] if host.startswith("[") else host
    port = port.rpartition(":")[2] if ":" in port else ""
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"must have a port in 1..65535 after the host name; got port {port!r} in {redact(base)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{redact(base)} holds a user name or password (user:pass@...): they are never sent. Serve the "
            f"files without credentials, or put a token in the query string (https://host/base?token=...)"
        )
    return parts


def redact(url: str) -> str:
    """``url`` without credentials: no ``user:pass@``, query values replaced by ``***``.

    Example:
        >>> redact("https://alice:s3cret@mirror.example/w/f.pth?token=abc&x=1")
        'https://mirror.example/w/f.pth?token=***&x=***'
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        host = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
        return f"{scheme}{sep}{host}/<unparsable URL>" if sep else "<unparsable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def resolve_weights(
    weights: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    registry: Mapping[str, WeightsEntry] = REGISTRY,
) -> tuple[dict[str, torch.Tensor] | None, str, WeightsEntry | None]:
    """State dict, a description and the registry entry of a ``weights=``.

    A registry name downloads (or reuses) the official file. Another string or path is
    read as a local file; one named like an official file is checked like it (pin,
    prefix) and comes back with its entry, if that is in ``registry``. ``"random"`` or
    ``None``: ``(None, "random init", None)``.

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
    if named is not None and (problem := _problem(path, named)) is not None:
        raise WeightsError(
            f"`weights` file {path} was refused: {problem}. It is named like the official {named.name!r} "
            f"checkpoint and is checked as such: if it is another file, rename it."
        )
    state = read_state_dict(path)
    return state, f"`weights` file {path}", named if named in registry.values() else None
