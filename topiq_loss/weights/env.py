"""Environment variables: the one place the package reads them, each checked where it is read."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

__all__ = ["env_value"]

_T = TypeVar("_T")


def env_value(name: str, parse: Callable[[str], _T], error: type[Exception] = ValueError) -> _T | None:
    """The variable ``name`` parsed by ``parse`` (None when unset or blank); ``parse``'s ValueError("must be ...;
    got ...") comes back as ``error``("environment variable NAME must be ...; got ...")."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return parse(raw)
    except ValueError as exc:
        raise error(f"environment variable {name} {exc}") from None
