"""What a weights file must hash to: name prefixes, full-digest pins and recorded digests.

The official file names carry only the first 8 hex digits of the sha256 (a 32-bit
check: a colliding file can be made in minutes). Stronger, in order:

1. a pin: ``TOPIQ_LOSS_PINS=/path/pins.txt`` in ``sha256sum`` format
   (``<64 hex>  <file name>`` per line), or a full ``sha256`` on the registry entry;
2. a record: ``<file>.sha256`` written beside a file downloaded from an official HTTPS
   host, checked at every later load.

:func:`verify` applies them to a file on disk: the loader uses it for cached files and
for paths named like an official file, the ``topiq-loss weights verify`` command for
any file.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from ._files import new_file
from .env import env_value
from .registry import WeightsEntry, WeightsError

__all__ = [
    "PINS_ENV",
    "Expected",
    "digest_problem",
    "expected",
    "expected_digest",
    "read_pins",
    "read_record",
    "record_path",
    "redact",
    "sha256_file",
    "verify",
    "write_record",
]

#: Environment variable naming a sha256sum-format file of pinned digests.
PINS_ENV = "TOPIQ_LOSS_PINS"
_CHUNK = 1 << 20
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _pins_lines(path: Path) -> list[str]:
    """The text lines of a pins file (a UTF-8 BOM allowed); errors name the file and line."""
    where = f"{PINS_ENV} file {path}"
    if path.is_dir():
        raise WeightsError(f"{where} is a folder; expected a text file of '<64 hex digits>  <file name>' lines")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{where} cannot be read: {exc.strerror or exc}") from None
    lines = []
    for number, line in enumerate(raw.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            utf16 = " (it looks UTF-16 encoded)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
            raise WeightsError(
                f"{where}, line {number}: not UTF-8 text{utf16}: byte {exc.object[exc.start]:#04x} at "
                f"column {exc.start + 1}; save it as UTF-8 (sha256sum writes it so)"
            ) from None
    return lines


def read_pins(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{file name: digest}`` from a ``sha256sum`` file; blank lines and ``#`` comments skipped.

    Raises:
        WeightsError: the file is a folder, unreadable, not UTF-8, has a malformed line,
            or pins one file name to two digests; the message names the file and line.
    """
    path = Path(path)
    pins: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(_pins_lines(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise WeightsError(
                f"{PINS_ENV} file {path}, line {number}: expected '<64 hex digits>  <file name>' "
                f"(sha256sum format); got {line[:80]!r}"
            )
        name, digest = Path(match.group(2)).name, match.group(1).lower()
        if pins.setdefault(name, digest) != digest:
            raise WeightsError(
                f"{PINS_ENV} file {path}, line {number}: {name} is pinned to {digest} here and to "
                f"{pins[name]} on line {first_line[name]}; keep the right one"
            )
        first_line.setdefault(name, number)
    return pins


def expected_digest(entry: WeightsEntry) -> tuple[str | None, str]:
    """The full digest ``entry``'s file must have, and where it comes from; (None, "") if
    nothing but the name prefix is known. Reads (and validates) the pins file if set."""
    pins_file = env_value(PINS_ENV, str, WeightsError)
    if pins_file is not None:
        pinned = read_pins(pins_file).get(entry.filename)
        if pinned is not None:
            return pinned, f"{PINS_ENV} file {pins_file}"
    if entry.sha256:
        return entry.sha256.lower(), f"the registry entry {entry.name!r}"
    return None, ""


def record_path(dest: Path) -> Path:
    """Where the digest of ``dest``'s first official download is recorded."""
    return dest.with_name(dest.name + ".sha256")


def read_record(dest: Path) -> str | None:
    """The digest recorded beside ``dest`` at its first official download, if any."""
    path = record_path(dest)
    if not path.is_file():
        return None
    match = _LINE.match(path.read_text(encoding="utf-8", errors="replace").strip())
    if match is None:
        raise WeightsError(f"digest record {path} is malformed: delete it, or the file and it")
    return match.group(1).lower()


def write_record(dest: Path, digest: str) -> None:
    """Record ``digest`` beside ``dest`` through a new, unpredictable temporary file."""
    fd, tmp = new_file(dest.parent, f".{dest.name}.sha256", "tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{digest}  {dest.name}\n")
        os.replace(tmp, record_path(dest))
    finally:
        tmp.unlink(missing_ok=True)


class Expected(NamedTuple):
    """What a file's digest is held to: the pin (or None), its source, and the record."""

    full: str | None
    source: str
    record: str | None


def expected(entry: WeightsEntry, dest: Path) -> Expected:
    """The pin for ``entry`` and the record beside ``dest``, read once.

    Raises:
        WeightsError: the pins file or the record is unreadable or malformed.
    """
    full, source = expected_digest(entry)
    return Expected(full, source, read_record(dest))


def digest_problem(digest: str, entry: WeightsEntry, dest: Path, known: Expected | None = None) -> str | None:
    """Why a file at ``dest`` with sha256 ``digest`` is not ``entry``'s file (None if it is).

    ``known`` is :func:`expected`'s answer, read here when not given.
    """
    full, source, record = known if known is not None else expected(entry, dest)
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


class Refused(WeightsError):
    """A file's digest is not acceptable; ``problem`` says why."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} was refused: {problem}")
        self.problem = problem


def verify(path: str | os.PathLike[str], entry: WeightsEntry, known: Expected | None = None) -> str:
    """Hash the file at ``path`` and hold it to ``entry``'s pin, its record and its prefix.

    Args:
        path: the file (its record, if any, is ``<path>.sha256``).
        entry: the registry entry it claims to be.
        known: :func:`expected`'s answer for ``path``, read here when not given.

    Returns:
        The file's sha256 (64 hex digits).

    Raises:
        Refused: (a :class:`WeightsError`) the digest is not acceptable; ``.problem``
            says why.
        WeightsError: the pins file or the record is unreadable or malformed.
    """
    path = Path(path)
    digest = sha256_file(path)
    problem = digest_problem(digest, entry, path, known)
    if problem is not None:
        raise Refused(path, problem)
    return digest


def redact(url: str) -> str:
    """``url`` without credentials: no ``user:pass@``, query values replaced by ``***``.

    Never raises: an unparsable URL (a bad port, a broken IPv6 address) is shown as far
    as it can be, without its credentials and query.

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
    netloc = parts.netloc.rpartition("@")[2]  # the host and port as written, port valid or not
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
