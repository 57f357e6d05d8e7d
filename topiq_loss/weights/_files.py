"""Temporary files in a shared cache folder, created so that nothing planted there is followed."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["new_file"]

# O_EXCL refuses any existing name, a symbolic link included; O_NOFOLLOW where the
# platform has it says so twice.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def new_file(folder: Path, stem: str, suffix: str) -> tuple[int, Path]:
    """A new, empty ``<folder>/<stem>.<random>.<suffix>`` opened for writing: (fd, path).

    The name is unpredictable and created with ``O_EXCL``, so a file or link planted
    in a shared cache folder is never written through. Mode 0o666 less the umask,
    like any other file the process creates.
    """
    while True:
        path = folder / f"{stem}.{secrets.token_hex(8)}.{suffix}"
        try:
            return os.open(path, _FLAGS | getattr(os, "O_BINARY", 0), 0o666), path
        except FileExistsError:
            continue
