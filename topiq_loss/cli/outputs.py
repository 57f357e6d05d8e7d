"""The command line's output guard: every path a command will write, checked before any work.

Every command that writes (``score --csv/--json``, ``map -o``) passes its output paths
and every file the run will read through :func:`check_outputs` before a network is built.
An output is refused when it is one of those files (by any spelling: relative, through a
symlink, a hard link, another case on a case-insensitive file system), when it is a folder,
when its folder does not exist, or when two outputs are one file. The writers take the
:class:`OutputFile` the guard returns, so an output cannot skip it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .images import display_name

__all__ = ["OutputFile", "check_outputs"]


@dataclass(frozen=True)
class OutputFile:
    """An output path :func:`check_outputs` accepted, with the option that named it."""

    option: str  # "--csv", "--json", "-o"
    path: Path


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` reaches through any links; None if there is none.

    Two spellings are one file exactly when their identities match (``os.path.samefile``),
    which also covers hard links and case-insensitive file systems.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None], inputs: Iterable[str | os.PathLike[str]]
) -> dict[str, OutputFile]:
    """Check every output path of a run against each other and against every file it reads.

    Args:
        outputs: option -> path as given (None: the option was not given).
        inputs: every file the run will read (images, a weights file); missing ones are skipped
            (reading them reports them).

    Returns:
        option -> :class:`OutputFile`, for the options given.

    Raises:
        ValueError: naming the option and path: it is a folder, its folder does not exist,
            it is one of ``inputs``, or it is the same file as another output.
    """
    read: dict[tuple[int, int], str] = {}
    for src in inputs:
        ident = _identity(src)
        if ident is not None:
            read.setdefault(ident, display_name(src))
    accepted: dict[str, OutputFile] = {}
    taken: dict[object, str] = {}
    for option, given in outputs.items():
        if given is None:
            continue
        path = Path(given)
        shown = f"{option} {display_name(path)!r}"
        if path.is_dir():
            raise ValueError(f"{shown} is a folder; give the name of a file to write")
        real = Path(os.path.realpath(path))  # a dangling symlink writes where it points
        if not real.parent.is_dir():
            raise ValueError(f"no folder to write {shown} into: {display_name(real.parent)} is not a folder")
        ident = _identity(path)
        if ident is not None and ident in read:
            raise ValueError(f"{shown} is the input file {read[ident]!r}: refusing to overwrite it")
        # Not yet there: the same file when the folder and the name are the same.
        key: object = ident if ident is not None else (_identity(real.parent), os.path.normcase(real.name))
        if key in taken:
            raise ValueError(f"{taken[key]} and {shown} are the same file; give each output its own name")
        taken[key] = shown
        accepted[option] = OutputFile(option, path)
    return accepted
