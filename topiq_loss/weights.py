"""Registry of the official CFANet checkpoints (TOPIQ-FR, TOPIQ-NR, TOPIQ-IAA, ResNet50).

Only metadata lives here, with :class:`WeightsError`, the one error of the weights
path: :mod:`topiq_loss.hub` downloads, verifies and caches (through
:mod:`~topiq_loss.download`, :mod:`~topiq_loss.integrity` and
:mod:`~topiq_loss.checkpoint`).
Each entry knows the network it fits (``build``), the input resize the model was
evaluated with and its score range. The weights are the TOPIQ authors' and carry
their terms (non-commercial use); this package never bundles them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch.nn as nn

from .cfanet import CFANetFR
from .cfanet_nr import CFANetNR

__all__ = [
    "DEFAULT_NR_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "NR_WEIGHTS",
    "RANDOM",
    "WEIGHTS",
    "WeightsEntry",
    "WeightsError",
    "entry_for_file",
    "get_weights_entry",
]

_GITHUB = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"
_HF = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"

_PAPER = (
    "Chen et al., TOPIQ: A Top-down Approach from Semantics to Distortions for "
    "Image Quality Assessment, IEEE TIP 2024"
)
_LICENSE = "TOPIQ authors' terms (IQA-PyTorch weights): non-commercial research use"

#: The ``weights=`` spelling of an untrained network (tests only), in Python, YAML and
#: on the command line alike; ``None`` means the same.
RANDOM = "random"


class WeightsError(RuntimeError):
    """A checkpoint could not be downloaded, verified or loaded."""


@dataclass(frozen=True)
class WeightsEntry:
    """One official checkpoint.

    Attributes:
        name: registry key (``"kadid"``, ``"koniq"``, ...).
        filename: file name as published; torch.hub-style ``<stem>-<sha256[:8]>.pth``.
        sha256_prefix: the published hash prefix (no full digest is published).
        urls: download locations in priority order.
        build: makes the (randomly initialised) network the file loads into.
        resize: short side the model was evaluated at (antialiased resize), or None
            to take images as given.
        score_range: (worst, best) score, used to map a score to a 0-is-best loss.
        sha256: the file's full digest where someone with the official file has
            filled it in; empty today (no full digest is published). When set, only a
            file with exactly this digest is accepted.
        max_bytes: downloads larger than this are refused (the CFANet files are
            about 138-200 MiB).
        meta: training data, what it measures, licence, paper.
    """

    name: str
    filename: str
    sha256_prefix: str
    urls: tuple[str, ...]
    build: Callable[[], nn.Module] = field(default=CFANetFR, compare=False)
    resize: int | None = None
    score_range: tuple[float, float] = (0.0, 1.0)
    sha256: str = ""
    max_bytes: int = 192 * 2**20
    meta: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


def _entry(name: str, filename: str, dataset: str, measures: str, **kwargs: object) -> WeightsEntry:
    prefix = filename.rsplit("-", 1)[1].split(".", 1)[0]
    score_range: tuple[float, float] = kwargs.get("score_range", (0.0, 1.0))  # type: ignore[assignment]
    worst, best = score_range
    return WeightsEntry(
        name=name,
        filename=filename,
        sha256_prefix=prefix,
        urls=(f"{_GITHUB}/{filename}", f"{_HF}/{filename}"),
        meta={
            "dataset": dataset,
            "measures": measures,
            "score_range": f"about {worst:g} (worst) to {best:g} (best); higher is better",
            "license": _LICENSE,
            "paper": _PAPER,
        },
        **kwargs,  # type: ignore[arg-type]
    )


#: Full-reference (TOPIQ-FR) checkpoints, for :class:`~topiq_loss.TOPIQLoss`.
WEIGHTS: dict[str, WeightsEntry] = {
    "kadid": _entry(
        "kadid", "cfanet_fr_kadid_res50-2c4cc61d.pth", "KADID-10k", "fidelity to a reference (synthetic distortions)"
    ),
    "pipal": _entry(
        "pipal", "cfanet_fr_pipal_res50-69bbe5ba.pth", "PIPAL", "fidelity to a reference (incl. GAN/SR outputs)"
    ),
}
DEFAULT_WEIGHTS = "kadid"

#: No-reference checkpoints (TOPIQ-NR quality, TOPIQ-IAA aesthetics), for
#: :class:`~topiq_loss.TOPIQNRLoss`.
NR_WEIGHTS: dict[str, WeightsEntry] = {
    "koniq": _entry(
        "koniq", "cfanet_nr_koniq_res50-9a73138b.pth", "KonIQ-10k", "technical quality of in-the-wild photos",
        build=CFANetNR, max_bytes=256 * 2**20,
    ),
    "spaq": _entry(
        "spaq", "cfanet_nr_spaq_res50-a7f799ac.pth", "SPAQ", "quality of smartphone photos", build=CFANetNR,
        max_bytes=256 * 2**20,
    ),
    "flive": _entry(
        "flive", "cfanet_nr_flive_res50-ded1c74e.pth", "FLIVE (PaQ-2-PiQ)", "quality of in-the-wild photos",
        build=CFANetNR, resize=384, max_bytes=256 * 2**20,
    ),
    "ava": _entry(
        "ava", "cfanet_iaa_ava_res50-3cd62bb3.pth", "AVA", "aesthetics (expected 1..10 rating)",
        build=CFANetNR.aesthetics, resize=384, score_range=(1.0, 10.0), max_bytes=384 * 2**20,
    ),
}
DEFAULT_NR_WEIGHTS = "koniq"


def get_weights_entry(name: str, registry: Mapping[str, WeightsEntry] = WEIGHTS) -> WeightsEntry:
    """The registry entry called ``name``; a ValueError lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(
            f"`weights` must be one of {sorted(registry)}, a path to a checkpoint file, "
            f"or {RANDOM!r}; got {name!r}"
        ) from None


def entry_for_file(filename: str, registry: Mapping[str, WeightsEntry] | None = None) -> WeightsEntry | None:
    """The entry whose published file is called ``filename`` (FR and NR registries by
    default, read at call time), or None."""
    entries = registry if registry is not None else {**WEIGHTS, **NR_WEIGHTS}
    return next((e for e in entries.values() if e.filename == filename), None)
