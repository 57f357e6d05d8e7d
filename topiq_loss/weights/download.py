"""Bounded HTTP downloads into a shared folder, one process at a time.

Knows URLs, bytes and lock files, nothing of what the files hold or which digest they
must have: the caller's ``accept`` callback decides. A download is written to a new,
unpredictable ``<file>.<random>.partial`` file (created with ``O_EXCL``) and renamed
into place only once accepted. The lock file ``<file>.lock`` is removed when the
download ends, whether it succeeded or not.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._errors import DownloadError
from ._files import new_file
from .env import env_value

__all__ = ["MIRROR_ENV", "DownloadError", "fetch", "lock", "mirror_url", "remove_partials"]

logger = logging.getLogger(__name__)

#: Environment variable naming a base URL tried before the official hosts.
MIRROR_ENV = "TOPIQ_LOSS_MIRROR"
_CHUNK = 1 << 20
#: Per-operation socket timeout (connect, and any one read); the watchdog bounds the rest.
_TIMEOUT_S = 30.0
#: An exchange (connect, status line, headers and body together) that moves fewer than
#: _MIN_RATE body bytes/s over any _RATE_WINDOW_S window is aborted, so a server that
#: trickles its headers or its body cannot hold the download (and the lock) indefinitely.
_MIN_RATE = 16 * 1024
_RATE_WINDOW_S = 60.0


def _deadline_s(max_bytes: int) -> float:
    """Seconds the whole exchange may take: ``max_bytes`` at the rate floor, plus one window."""
    return _RATE_WINDOW_S + max_bytes / _MIN_RATE
#: How long a process waits for another one's download, and how often it says so.
_LOCK_TIMEOUT_S = 1800.0
_LOCK_POLL_S = 15.0
_LOCK_RETRY_S = 0.05


def mirror_url(filename: str) -> str | None:
    """``$TOPIQ_LOSS_MIRROR`` with ``filename`` appended to its path (its query kept), or None.

    Credentials (``user:pass@``) are refused rather than sent: urllib would never send
    them, and a request without them would fail with a misleading error.

    Raises:
        DownloadError: the variable is not an absolute URL, has a port outside
            1..65535, or holds credentials; the message names the variable.
    """
    parts = env_value(MIRROR_ENV, _mirror_base, DownloadError)
    if parts is None:
        return None
    path = parts.path.rstrip("/") + "/" + urllib.parse.quote(filename)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def _mirror_base(base: str) -> urllib.parse.SplitResult:
    """The mirror's URL, split; a ValueError saying what was expected and what came."""
    from .integrity import redact

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
    # urlsplit accepts port 0 and only complains about others when .port is read, with
    # a message that names neither the variable nor the value.
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"must have a port in 1..65535 after the host name; got port {port!r} in {redact(base)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{redact(base)} holds a user name or password (user:pass@...): they are "
            f"never sent. Serve the files without credentials, or put a token in the query string "
            f"(https://host/base?token=...), which is sent and never shown"
        )
    return parts


class _Watchdog:
    """One deadline and one rate floor over a whole exchange: connect, status line,
    headers and body alike.

    A socket timeout restarts at every byte, so a server sending one header byte per
    few seconds never trips it. Here a thread looks at the clock and at the bytes
    received, and shuts the connection's socket down when the exchange is past its
    deadline or a window went by under the rate floor; the blocked read then returns,
    and :func:`fetch` reports :attr:`reason`.
    """

    def __init__(self, max_bytes: int) -> None:
        self.start = time.monotonic()
        self.limit_s = _deadline_s(max_bytes)
        self.window_s, self.min_rate = _RATE_WINDOW_S, _MIN_RATE
        self.window_start, self.window_bytes = self.start, 0
        self.headers_done = False
        self.reason: str | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="topiq_loss download watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def attach(self, sock: socket.socket) -> None:
        """Watch the socket of the connection now open (a redirect opens another)."""
        with self._lock:
            self._sock = sock
            if self.reason is not None:
                self._shut()

    def received(self, n: int) -> None:
        self.window_bytes += n

    def _watch(self) -> None:
        tick = min(0.25, self.window_s / 4)
        while not self._done.wait(tick):
            now = time.monotonic()
            phase = "body" if self.headers_done else "response headers, not yet complete"
            if now - self.start >= self.limit_s:
                reason = (
                    f"no complete response within the deadline of {self.limit_s:.1f} s for the whole "
                    f"exchange (stopped in the {phase}); aborted"
                )
            elif now - self.window_start >= self.window_s:
                elapsed = now - self.window_start
                if self.window_bytes >= self.min_rate * elapsed:
                    self.window_start, self.window_bytes = now, 0
                    continue
                reason = (
                    f"transfer too slow ({self.window_bytes} bytes in {elapsed:.1f} s, under "
                    f"{self.min_rate} bytes/s, in the {phase}); aborted"
                )
            else:
                continue
            with self._lock:
                self.reason = reason
                self._shut()
            return

    def _shut(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the read it blocked has ended anyway


def _watched(base: type[http.client.HTTPConnection], watchdog: _Watchdog) -> type[http.client.HTTPConnection]:
    class Watched(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()
            watchdog.attach(self.sock)

    return Watched


class _WatchedHTTP(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_watched(http_class, self.watchdog), req, **kwargs)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        return super().do_open(_watched(http_class, self.watchdog), req, **kwargs)


def fetch(url: str, dest: Path, max_bytes: int, accept: Callable[[str], None], progress: bool = True) -> str:
    """Download ``url`` into ``dest`` atomically and return its sha256.

    The whole exchange (connect, headers, body) is held to one deadline and one rate
    floor (see :class:`_Watchdog`).

    Args:
        url: where from.
        dest: the final path; its folder must exist (the caller holds :func:`lock`).
        max_bytes: a larger body, announced or not, is refused.
        accept: called with the hex digest once all bytes are in; raises to refuse
            the file (then nothing is written under ``dest``).
        progress: a tqdm bar (on a terminal).

    Raises:
        DownloadError: too large, too slow, past the deadline, or cut short.
        OSError, http.client.HTTPException, ValueError: as urllib raises them.
    """
    fd, tmp = new_file(dest.parent, dest.name, "partial")
    try:
        with os.fdopen(fd, "wb") as out, _Watchdog(max_bytes) as watchdog:
            opener = urllib.request.build_opener(_WatchedHTTP(watchdog), _WatchedHTTPS(watchdog))
            try:
                h = _receive(opener, url, out, max_bytes, watchdog, dest.name, progress)
            except Exception:
                if watchdog.reason is not None:  # the watchdog cut it: that is the error
                    raise DownloadError(watchdog.reason) from None
                raise
            if watchdog.reason is not None:  # cut between two reads: the bytes may look complete
                raise DownloadError(watchdog.reason)
            out.flush()
            os.fsync(out.fileno())
        digest: str = h.hexdigest()
        accept(digest)
        os.replace(tmp, dest)
        return digest
    finally:
        tmp.unlink(missing_ok=True)


def _receive(
    opener: urllib.request.OpenerDirector, url: str, out: Any, max_bytes: int, watchdog: _Watchdog, desc: str,
    progress: bool,
) -> hashlib._Hash:
    """The exchange itself: ``url``'s body into ``out``; its running sha256."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "topiq_loss"})
    with opener.open(request, timeout=_TIMEOUT_S) as resp:
        watchdog.headers_done = True
        total = resp.headers.get("Content-Length")
        if total is not None and int(total) > max_bytes:
            raise DownloadError(f"server announces {int(total)} bytes, more than the {max_bytes} expected at most")
        h = hashlib.sha256()
        size = 0
        with tqdm(
            total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=None if progress else True,
        ) as bar:
            # read1: returns what has arrived, so the size check runs while a slow
            # server trickles bytes.
            while chunk := resp.read1(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise DownloadError(f"more than the {max_bytes} bytes expected at most; aborted")
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
                watchdog.received(len(chunk))
        if total is not None and size != int(total) and watchdog.reason is None:
            raise DownloadError(f"connection closed after {size} of {total} bytes")
    return h


def remove_partials(dest: Path) -> None:
    """Remove ``dest``'s partial downloads; call it holding the lock (then any are abandoned)."""
    for stale in dest.parent.glob(f"{dest.name}.*.partial"):
        stale.unlink(missing_ok=True)


def _holder(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[:200].strip() or "another process"
    except OSError:
        return "another process"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on the file now at ``path``, or None if it is held."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            current = os.stat(path, follow_symlinks=False)
        except BlockingIOError:
            os.close(fd)
            return None
        except FileNotFoundError:
            current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd
        # The previous holder removed this file before we locked it: lock the next one.
        os.close(fd)


def _posix_acquire(path: Path, description: str) -> Callable[[], None]:
    start = time.monotonic()
    next_report = _LOCK_POLL_S
    while (fd := _try_lock(path)) is None:
        time.sleep(_LOCK_RETRY_S)
        waited = time.monotonic() - start
        if waited >= next_report or waited >= _LOCK_TIMEOUT_S:
            next_report += _LOCK_POLL_S
            holder = _holder(path)
            logger.warning("waited %.0f s for %s, held by %s", waited, path, holder)
            if waited >= _LOCK_TIMEOUT_S:
                raise DownloadError(
                    f"gave up after {waited:.0f} s waiting for the lock file {path}, held by "
                    f"{holder}. If no download is running, delete the lock file."
                )
    try:
        os.ftruncate(fd, 0)
        os.write(fd, description.encode())
    except OSError:
        pass  # the description is a courtesy to waiters

    def release() -> None:
        # Removed while still held: a waiter that opened this file sees it gone once it
        # gets the lock, and locks the next one instead (see _try_lock).
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    return release


def _filelock_acquire(path: Path, description: str) -> Callable[[], None]:  # pragma: no cover - Windows
    import filelock

    held = filelock.FileLock(str(path), timeout=_LOCK_TIMEOUT_S)
    try:
        held.acquire()
    except filelock.Timeout:
        raise DownloadError(
            f"gave up after {_LOCK_TIMEOUT_S:.0f} s waiting for the lock file {path}, held by "
            f"{_holder(path)}. If no download is running, delete the lock file."
        ) from None
    return held.release  # filelock removes the file on Windows itself


@contextmanager
def lock(path: Path, way_out: str) -> Iterator[None]:
    """Hold the download lock file ``path``; a wait logs who holds it and ends in a DownloadError.

    The file says who holds it (pid, host, since when) and is removed on release, so
    no stale description outlives a download. ``way_out`` ends the message of an
    unusable cache folder.
    """
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a symbolic link" if path.is_symlink() else "not a regular file"
        raise DownloadError(f"lock file {path} is {kind}; remove it (no download is using it)")
    if not os.access(path.parent, os.W_OK):
        raise DownloadError(f"the weights cache {path.parent} is not writable: {way_out}")
    description = (
        f"pid {os.getpid()} on {socket.gethostname()}, downloading {path.name.removesuffix('.lock')} "
        f"since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    acquire = _filelock_acquire if sys.platform == "win32" else _posix_acquire
    try:
        release = acquire(path, description)
    except OSError as exc:
        raise DownloadError(f"cannot use the lock file {path} ({exc.strerror or exc}): {way_out}") from None
    try:
        yield
    finally:
        release()
