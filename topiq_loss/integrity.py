"""What a weights file must hash to: name prefixes, full-digest pins and recorded digests.

The official file names carry only the first 8 hex digits of the sha256 (a 32-bit
check: a colliding file can be made in minutes). Stronger, in order:

1. a pin: ``TOPIQ_LOSS_PINS=/path/pins.txt`` in ``sha256sum`` format
   (``<64 hex>  <file name>`` per line), or a full ``sha256`` on the registry entry;
2. a record: ``<file>.sha256`` written beside a file downloaded from an official HTTPS
   host, checked at every later load.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from pathlib import Path

from .weights import WeightsEntry

__all__ = ["PINS_ENV", "expected_digest", "read_pins", "read_record", "redact", "sha256_file", "write_record"]

#: Environment variable naming a sha256sum-format file of pinned digests.
PINS_ENV = "TOPIQ_LOSS_PINS"
_CHUNK = 1 << 20
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


class IntegrityError(ValueError):
    """A pins or record file is malformed (re-raised by the hub as a WeightsError)."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def read_pins(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{file name: digest}`` from a ``sha256sum`` file; blank lines and ``#`` comments skipped."""
    pins: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise IntegrityError(f"{PINS_ENV} file {path} cannot be read: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise IntegrityError(
                f"{PINS_ENV} file {path}, line {number}: expected '<64 hex digits>  <file name>' "
                f"(sha256sum format); got {line[:80]!r}"
            )
        pins[Path(match.group(2)).name] = match.group(1).lower()
    return pins


def expected_digest(entry: WeightsEntry) -> tuple[str | None, str]:
    """The full digest ``entry``'s file must have, and where it comes from; (None, "") if
    nothing but the name prefix is known."""
    pins_file = os.environ.get(PINS_ENV, "").strip()
    if pins_file:
        pinned = read_pins(pins_file).get(entry.filename)
        if pinned is not None:
            return pinned, f"{PINS_ENV} file {pins_file}"
    if entry.sha256:
        return entry.sha256.lower(), f"the registry entry {entry.name!r}"
    return None, ""


def record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def read_record(dest: Path) -> str | None:
    """The digest recorded beside ``dest`` at its first official download, if any."""
    path = record_path(dest)
    if not path.is_file():
        return None
    match = _LINE.match(path.read_text().strip())
    if match is None:
        raise IntegrityError(f"digest record {path} is malformed: delete it, or the file and it")
    return match.group(1).lower()


def write_record(dest: Path, digest: str) -> None:
    tmp = record_path(dest).with_suffix(".sha256.tmp")
    tmp.write_text(f"{digest}  {dest.name}\n")
    os.replace(tmp, record_path(dest))


def redact(url: str) -> str:
    """``url`` without credentials: no ``user:pass@``, query values replaced by ``***``.

    Example:
        >>> redact("https://alice:s3cret@mirror.example/w/f.pth?token=abc&x=1")
        'https://mirror.example/w/f.pth?token=***&x=***'
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
