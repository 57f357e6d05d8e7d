"""Where ``weights=`` leads: the caches a user has (ours, pyiqa's, the Hub's), then ``$TOPIQ_LOSS_MIRROR``, the
Hub (``hf_hub_download``) and the GitHub release (``torch.hub``); every file checked (docs/weights.md)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import torch

from .._errors import DownloadError  # noqa: F401 - 0.4's topiq_loss.download name (an alias of this module)
from .checkpoint import checkpoint_layout, load_state_dict_checked, read_state_dict
from .env import env_value
from .reader import classify_weights
from .registry import RANDOM, REGISTRY, WeightsEntry, WeightsError, entry_for_file, get_weights_entry

__all__ = ["MIRROR_ENV", "PINS_ENV", "WeightsError", "checkpoint_layout", "default_cache_dir", "digest_problem",
           "download_weights", "load_state_dict_checked", "pinned", "pyiqa_cache_dir", "read_pins", "read_state_dict",
           "redact", "resolve_weights", "sha256_file", "verify"]

logger = logging.getLogger(__name__)

#: Environment variable: a base URL tried before the official sources.
MIRROR_ENV = "TOPIQ_LOSS_MIRROR"
#: Environment variable: a sha256sum-format file of pinned digests.
PINS_ENV = "TOPIQ_LOSS_PINS"
#: How long a process waits for another one's download of the same file.
LOCK_TIMEOUT_S = 1800.0
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
# path -> (size, mtime_ns) of the files accepted in this process: hashed once while unchanged.
_checked: dict[str, tuple[int, int]] = {}


def default_cache_dir() -> Path:
    """``<torch.hub.get_dir()>/checkpoints``; follows ``TORCH_HOME``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def pyiqa_cache_dir() -> Path:
    """Where pyiqa keeps the same files: ``<torch.hub.get_dir()>/pyiqa``."""
    return Path(torch.hub.get_dir()) / "pyiqa"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_pins(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{file name: digest}`` from a ``sha256sum`` file; a WeightsError names the file and line."""
    where = f"{PINS_ENV} file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeError) as exc:
        raise WeightsError(f"{where} cannot be read as UTF-8 text of '<64 hex digits>  <file name>' lines ({exc})") from None
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not (line := line.strip()) or line.startswith("#"):
            continue
        if (match := _LINE.match(line)) is None:
            raise WeightsError(f"{where}, line {number}: expected '<64 hex digits>  <file name>'; got {line[:80]!r}")
        name, digest = Path(match.group(2)).name, match.group(1).lower()
        if pins.setdefault(name, digest) != digest:
            raise WeightsError(f"{where}, line {number}: {name} is pinned to a second digest; keep the right one")
    return pins


def pinned(entry: WeightsEntry) -> tuple[str | None, str]:
    """The full digest pinned for ``entry``'s file and where; ``(None, "")`` if none."""
    pins_file = env_value(PINS_ENV, str, WeightsError)
    if pins_file is not None and (digest := read_pins(pins_file).get(entry.filename)) is not None:
        return digest, f"{PINS_ENV} file {pins_file}"
    return (entry.sha256.lower(), f"the registry entry {entry.name!r}") if entry.sha256 else (None, "")


def digest_problem(digest: str, entry: WeightsEntry, announced: str | None = None) -> str | None:
    """Why a file of sha256 ``digest`` is not ``entry``'s, or None: a pin outranks its prefix and the Hub's digest."""
    full, source = pinned(entry)
    if full is not None:
        return None if digest == full else f"sha256 {digest} differs from the one pinned in {source} ({full})"
    if not digest.startswith(entry.sha256_prefix):
        return f"sha256 {digest[:8]}... does not start with the published prefix {entry.sha256_prefix}"
    if announced is not None and digest != announced:
        return f"sha256 {digest} differs from the digest the Hub announced for it ({announced})"
    return None


def _announced(path: Path) -> str | None:
    """The digest the Hub announced for a file of its cache: the name of its blob."""
    return name if re.fullmatch(r"[0-9a-f]{64}", name := Path(os.path.realpath(path)).name) else None


def verify(path: str | os.PathLike[str], entry: WeightsEntry) -> str:
    """The sha256 of ``path``, held to ``entry``'s pin, prefix and announced digest; else a WeightsError."""
    digest = sha256_file(path)
    if (problem := digest_problem(digest, entry, _announced(Path(path)))) is not None:
        raise WeightsError(f"{path} was refused: {problem}")
    return digest


def _problem(path: Path, entry: WeightsEntry) -> str | None:
    """:func:`verify`'s verdict as a phrase, remembered while the file is unchanged."""
    st = path.stat()
    if _checked.get(str(path)) == (stamp := (st.st_size, st.st_mtime_ns)):
        return None
    if st.st_size > entry.max_bytes:
        return f"{st.st_size} bytes, more than the {entry.max_bytes} expected at most"
    if (problem := digest_problem(sha256_file(path), entry, _announced(path))) is None:
        _checked[str(path)] = stamp
    return problem


def _remove_hub_file(path: Path) -> None:
    """A Hub cache link and its blob: nothing left that hf_hub_download would trust."""
    for file in (Path(os.path.realpath(path)), path):
        file.unlink(missing_ok=True)


def _from_caches(entry: WeightsEntry, folder: Path) -> Path | None:
    """A cached file that passes: ours, pyiqa's (never removed), the Hub's; a refused one warns."""

    def passes(path: Path, discard: Callable[[Path], None] | None) -> bool:
        if not path.is_file() or (problem := _problem(path, entry)) is None:
            return path.is_file()
        warnings.warn(f"Cached TOPIQ weights {path} were refused ({problem}); {'removed' if discard else 'skipped'}.",
                      RuntimeWarning, stacklevel=4)
        if discard is not None:
            discard(path)
        return False

    if passes(ours := folder / entry.filename, lambda p: p.unlink(missing_ok=True)):
        return ours
    if passes(theirs := pyiqa_cache_dir() / entry.filename, None):
        return theirs
    from huggingface_hub import try_to_load_from_cache  # only now: `import topiq_loss` stays light

    hit = try_to_load_from_cache(entry.hub_repo, entry.filename)
    return Path(hit) if isinstance(hit, str) and passes(Path(hit), _remove_hub_file) else None


def _from_hub(entry: WeightsEntry) -> Path:
    from huggingface_hub import hf_hub_download

    path = Path(hf_hub_download(entry.hub_repo, entry.filename))
    if (problem := _problem(path, entry)) is not None:
        _remove_hub_file(path)
        raise WeightsError(f"the downloaded file was refused and removed: {problem}")
    return path


def _from_url(url: str, entry: WeightsEntry, folder: Path, progress: bool, timeout: float) -> Path:
    """``url`` into ``<folder>/<file>`` through a temporary file, renamed once accepted."""
    import filelock

    dest = folder / entry.filename
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(f"{dest}.lock", timeout=LOCK_TIMEOUT_S):
            if dest.is_file() and _problem(dest, entry) is None:  # another process got it meanwhile
                return dest
            for stale in folder.glob(f"{dest.name}.*.download*"):  # only the lock holder writes these
                stale.unlink(missing_ok=True)
            tmp = dest.with_name(f"{dest.name}.{secrets.token_hex(8)}.download")
            # torch.hub takes no timeout: the socket's default, only where none is set, and restored.
            default = socket.getdefaulttimeout()
            socket.setdefaulttimeout(default if default is not None else timeout)
            try:
                torch.hub.download_url_to_file(url, str(tmp), progress=progress)
                if (problem := _problem(tmp, entry)) is not None:
                    raise WeightsError(problem)
                os.replace(tmp, dest)
            finally:
                socket.setdefaulttimeout(default)
                tmp.unlink(missing_ok=True)
    except filelock.Timeout:
        raise WeightsError(f"gave up after {LOCK_TIMEOUT_S:.0f} s waiting for the lock file {dest}.lock; "
                           f"if no download is running, delete it") from None
    _checked[str(dest)] = _checked.pop(str(tmp))  # os.replace keeps the size and mtime the check saw
    if pinned(entry)[0] is None:
        logger.warning("%s came from %s: only the 8-hex prefix of its name was checked; `topiq-loss weights verify "
                       "%s` prints its line for a %s file", entry.filename, redact(url), dest, PINS_ENV)
    return dest


def _reason(exc: BaseException) -> str:
    first, cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0], exc.__cause__
    return f"{first} ({_reason(cause)})" if cause is not None and str(cause) not in first else first


def download_weights(
    name: str | WeightsEntry, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True
) -> Path:
    """Path of the checked file of ``name`` (a registry name or a :class:`WeightsEntry`), cached or downloaded.

    Plain URLs download into ``cache_dir`` (default :func:`default_cache_dir`), the Hub into its own cache.
    """
    entry = name if isinstance(name, WeightsEntry) else get_weights_entry(name, REGISTRY)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    pinned(entry)  # a bad pins file or mirror is named before any request
    mirror = mirror_url(entry.filename)
    if (found := _from_caches(entry, folder)) is not None:
        return found
    from huggingface_hub import constants, hf_hub_url

    offline, timeout = bool(constants.HF_HUB_OFFLINE), float(constants.HF_HUB_DOWNLOAD_TIMEOUT)
    release, hub = f"{entry.release}/{entry.filename}", hf_hub_url(entry.hub_repo, entry.filename)
    from_url = partial(_from_url, entry=entry, folder=folder, progress=progress, timeout=timeout)
    sources: list[tuple[str, Callable[[], Path]]] = [(redact(mirror), partial(from_url, mirror))] if mirror else []
    sources += [(f"{hub} (huggingface_hub)", partial(_from_hub, entry)), (release, partial(from_url, release))]
    failures = []
    for where, fetch in [] if offline else sources:
        try:
            return fetch()
        except Exception as exc:  # noqa: BLE001 - any failure of one source: the next one
            reason = _reason(exc) if mirror is None else _reason(exc).replace(mirror, redact(mirror))
            logger.warning("download of %s failed: %s", where, reason)
            failures.append(f"  {where}: {reason}")
    tried = "HF_HUB_OFFLINE is set: nothing was requested." if offline else "Tried:\n" + "\n".join(failures)
    raise WeightsError(
        f"Could not get the TOPIQ weights {entry.name!r} ({entry.filename}). {tried}\nIts sources: {hub} (the "
        f"Hugging Face Hub) and {release} (the GitHub release).\nLooked in {folder}, {pyiqa_cache_dir()} (pyiqa's "
        f"cache) and {constants.HF_HUB_CACHE} (the Hub cache).\nTo work offline, fetch the file on a connected "
        f"machine and place it at\n  {folder / entry.filename}\nor pass weights='/path/to/{entry.filename}'; or set "
        f"{MIRROR_ENV} to a base URL that serves it, or HF_ENDPOINT to a Hub mirror"
        + (", and unset HF_HUB_OFFLINE." if offline else ".")
    )


def mirror_url(filename: str) -> str | None:
    """``$TOPIQ_LOSS_MIRROR`` with ``filename`` appended to its path (a query kept), or None."""
    if (parts := env_value(MIRROR_ENV, _mirror_base, WeightsError)) is None:
        return None
    path = parts.path.rstrip("/") + "/" + urllib.parse.quote(filename)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _mirror_base(base: str) -> urllib.parse.SplitResult:
    expected = "must be an absolute URL such as https://host/base, with a port in 1..65535 if any"
    try:
        parts = urllib.parse.urlsplit(base)
        port = parts.port  # a ValueError for a port that is no number or is past 65535
    except ValueError as exc:
        raise ValueError(f"{expected}; got {redact(base)} ({exc})") from None
    if not parts.scheme or not (parts.netloc or parts.scheme == "file") or port == 0:
        raise ValueError(f"{expected}; got {redact(base)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{redact(base)} holds a user name or password (user:pass@...), which are never sent: "
                         f"serve the files without, or put a token in the query string (https://host/base?token=...)")
    return parts


def redact(url: str) -> str:
    """``url`` without credentials: no ``user:pass@``, query values replaced by ``***``.

    >>> redact("https://alice:s3cret@mirror.example/w/f.pth?token=abc&x=1")
    'https://mirror.example/w/f.pth?token=***&x=***'
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        host = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
        return f"{scheme}://{host}/<unparsable URL>" if sep else "<unparsable URL>"
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, ""))


def resolve_weights(
    weights: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True,
    registry: Mapping[str, WeightsEntry] = REGISTRY,
) -> tuple[dict[str, torch.Tensor] | None, str, WeightsEntry | None]:
    """State dict, description and entry of a ``weights=``: a name of ``registry`` (downloaded), a path (one named
    like an official file is checked like it), or random: ``(None, "random init", None)``."""
    what, value = classify_weights(weights, registry, f"one of {sorted(registry)}, a path to a checkpoint file, or {RANDOM!r}")
    if what == "random":
        return None, "random init", None
    if what == "name":
        path = download_weights(registry[str(value)], cache_dir=cache_dir, progress=progress)
        return read_state_dict(path), f"official {value!r} weights ({path})", registry[str(value)]
    path = Path(str(value))
    named = entry_for_file(path.name, {**REGISTRY, **registry})
    if named is not None and (problem := _problem(path, named)) is not None:
        raise WeightsError(f"`weights` file {path} was refused: {problem}. It is named like the official "
                           f"{named.name!r} checkpoint and is checked as such: if it is another file, rename it.")
    return read_state_dict(path), f"`weights` file {path}", named if named in registry.values() else None
