"""The ``weights`` command: list, fetch and verify the official checkpoint files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..weights.hub import default_cache_dir, download_weights, pinned, sha256_file, verify
from ..weights.registry import REGISTRY, WeightsEntry, WeightsError, list_weights

__all__ = ["weights_command"]


def weights_command(args: argparse.Namespace) -> int:
    """``topiq-loss weights list|fetch NAME|verify NAME_OR_PATH``; exit 2 when a file is refused."""
    entries = REGISTRY
    folder = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.action == "list":
        names = list_weights()
        # Columns as wide as their longest cell, so a new entry never runs into the next.
        wn = max(len(n) for n in [*names, "name"]) + 2
        wf = max(len(entries[n].filename) for n in names) + 2
        print(f"{'name':<{wn}}{'kind':<6}{'file':<{wf}}{'cached':<8}check")
        for name in names:
            e = entries[name]
            kind = e.kind.upper()
            path = folder / e.filename
            full, source = pinned(e)
            check = f"pinned ({source})" if full else "Hub digest, or name prefix"
            print(f"{name:<{wn}}{kind:<6}{e.filename:<{wf}}{'yes' if path.is_file() else 'no':<8}{check}")
        print(f"cache: {folder}")
        return 0
    if args.action == "fetch":
        if args.name not in entries:
            raise ValueError(f"NAME must be one of {sorted(entries)}; got {args.name!r}")
        path = download_weights(entries[args.name], cache_dir=folder)
        print(f"{sha256_file(path)}  {path.name}")
        print(f"-> {path}")
        return 0
    entry: WeightsEntry | None
    if args.name in entries:
        entry = entries[args.name]
        path = folder / entry.filename
        if not path.is_file():
            raise ValueError(f"{args.name!r} is not cached at {path}: `topiq-loss weights fetch {args.name}`")
    else:
        path = Path(args.name)
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        entry = next((e for e in entries.values() if e.filename == path.name), None)
    print(f"{sha256_file(path)}  {path.name}")
    if entry is None:
        print("not an official file name: nothing to compare with", file=sys.stderr)
        return 0
    try:
        verify(path, entry)
    except WeightsError as exc:
        print(f"topiq-loss: {exc}", file=sys.stderr)
        return 2
    print(f"ok: accepted as {entry.name!r}", file=sys.stderr)
    return 0
