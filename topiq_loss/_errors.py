"""The package's exceptions: a leaf every floor may import.

Each subclasses the built-in a caller would catch (``RuntimeError``, ``ValueError``,
``FileNotFoundError``) and :class:`WeightsError` where a weights file is the cause.
"""

from __future__ import annotations

__all__ = ["DownloadError", "WeightsArgumentError", "WeightsError", "WeightsFileNotFoundError", "WeightsKindError"]


class WeightsError(RuntimeError):
    """A checkpoint could not be downloaded, verified or loaded."""


class WeightsArgumentError(WeightsError, ValueError):
    """A ``weights=`` value that names nothing loadable: empty, a folder, an unknown name.

    A :class:`WeightsError` and a ``ValueError`` (a bad argument), so either ``except``
    catches it.
    """


class WeightsFileNotFoundError(WeightsError, FileNotFoundError):
    """No file at the path given as ``weights=``: a :class:`WeightsError` and a
    ``FileNotFoundError``."""


class WeightsKindError(WeightsError, ValueError):
    """The weights are of another kind than the network asked for.

    A :class:`WeightsError` (the checkpoint does not fit) and a ``ValueError`` (the
    ``weights=`` and ``kind=`` arguments disagree), so either ``except`` catches it.
    """


class DownloadError(RuntimeError):
    """A download or its lock failed; the message says why (URLs without credentials)."""
