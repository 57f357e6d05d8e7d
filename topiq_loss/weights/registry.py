"""Registry of the official CFANet checkpoints (TOPIQ-FR, TOPIQ-NR, TOPIQ-IAA): metadata only.

The weights are the TOPIQ authors' and carry their terms (non-commercial use); never bundled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import torch.nn as nn

from .._errors import WeightsArgumentError, WeightsError, WeightsFileNotFoundError, WeightsKindError
from ..models.cfanet_fr import CFANetFR
from ..models.cfanet_nr import CFANetNR

__all__ = ["BUILD_BY_KIND", "BUILD_BY_LAYOUT", "DEFAULT_NR_WEIGHTS", "DEFAULT_WEIGHTS", "DEFAULT_WEIGHTS_BY_KIND",
           "HUB_REPO", "KINDS", "Kind", "LAYOUT_KINDS", "NR_WEIGHTS", "RANDOM", "RELEASE", "REGISTRY", "WEIGHTS",
           "WeightsEntry", "WeightsArgumentError", "WeightsError", "WeightsFileNotFoundError", "WeightsKindError",
           "as_kinds", "check_kind", "entry_for_file", "is_random", "get_weights_entry", "list_weights"]

#: Where the official files are published: pyiqa's Hugging Face Hub repository, and the GitHub release.
HUB_REPO = "chaofengc/IQA-PyTorch-Weights"
RELEASE = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"

_PAPER = "Chen et al., TOPIQ: A Top-down Approach from Semantics to Distortions for Image Quality Assessment, IEEE TIP 2024"
_LICENSE = "TOPIQ authors' terms (IQA-PyTorch weights): non-commercial research use"

#: The ``weights=`` spelling of an untrained network (tests only); ``None`` means the same.
RANDOM = "random"


def is_random(weights: object) -> bool:
    """True for :data:`RANDOM` and ``None``: the one place that reads the spellings of random weights."""
    return weights is None or (isinstance(weights, str) and weights == RANDOM)


#: What a checkpoint scores: full-reference quality, no-reference quality, aesthetics. The same names as
#: the checkpoint layouts told from the tensors (:data:`topiq_loss.weights.checkpoint.LAYOUTS`).
Kind = Literal["fr", "nr", "iaa"]
KINDS: Final[tuple[Kind, ...]] = ("fr", "nr", "iaa")
#: The kind of each checkpoint layout: a layout is a kind and a backbone.
LAYOUT_KINDS: Final[Mapping[str, Kind]] = {"fr": "fr", "nr": "nr", "iaa": "iaa", "nr_swin": "nr", "iaa_swin": "iaa"}
#: The (randomly initialised) network each kind (ResNet50) and each layout loads into.
BUILD_BY_KIND: Final[Mapping[str, Callable[[], nn.Module]]] = {"fr": CFANetFR, "nr": CFANetNR, "iaa": CFANetNR.aesthetics}
BUILD_BY_LAYOUT: Final[Mapping[str, Callable[[], nn.Module]]] = {
    **BUILD_BY_KIND, "nr_swin": CFANetNR.swin, "iaa_swin": CFANetNR.swin_aesthetics
}


def check_kind(kind: object) -> Kind:
    """``kind`` if it is one of :data:`KINDS`; a ValueError naming ``kind`` otherwise."""
    for known in KINDS:
        if isinstance(kind, str) and kind == known:
            return known
    raise ValueError(f"`kind` must be one of {KINDS} or None; got {kind!r}")


def as_kinds(kind: str | Sequence[str] | None) -> tuple[Kind, ...]:
    """``kind`` (one, several, or None: all) as a non-empty tuple of :data:`KINDS`; else a ValueError."""
    kinds = KINDS if kind is None else tuple(check_kind(k) for k in ((kind,) if isinstance(kind, str) else kind))
    if not kinds:
        raise ValueError(f"`kind` must be one of {KINDS}, several of them, or None; got {kind!r}")
    return kinds


@dataclass(frozen=True)
class WeightsEntry:
    """One official checkpoint; its sources follow from ``filename`` (``<stem>-<sha256[:8]>.pth``).

    ``build`` makes the network it loads into; ``resize``: the short side it was evaluated at (None: as given);
    ``score_range``: (worst, best); ``sha256``, where filled in, is the only digest accepted; a file past
    ``max_bytes`` is refused before it is hashed; ``meta``: training data, what it measures, licence, paper.
    """

    name: str
    filename: str
    sha256_prefix: str
    hub_repo: str = HUB_REPO
    release: str = RELEASE
    build: Callable[[], nn.Module] = field(default=CFANetFR, compare=False)
    resize: int | None = None
    score_range: tuple[float, float] = (0.0, 1.0)
    sha256: str = ""
    max_bytes: int = 192 * 2**20
    meta: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    kind: Kind = "fr"

    def __post_init__(self) -> None:
        check_kind(self.kind)

    @property
    def urls(self) -> tuple[str, str]:
        """The file's two official addresses: the GitHub release, the Hub (``HF_ENDPOINT`` aside)."""
        return f"{self.release}/{self.filename}", f"https://huggingface.co/{self.hub_repo}/resolve/main/{self.filename}"


_SWIN = {"backbone": "Swin-B (window 12); every image is resized to 384x384 (antialiased) by the network"}
_FACE = {"input": "expects aligned, centred face crops (FFHQ-style); no face alignment is done"}
_AVA = ("AVA", "aesthetics (expected 1..10 rating)")


def _entry(name: str, filename: str, kind: Kind, data: tuple[str, str], mib: int, layout: str | None = None,
           resize: int | None = None, score_range: tuple[float, float] = (0.0, 1.0),
           extra: Mapping[str, str] | None = None) -> WeightsEntry:
    (worst, best), (dataset, measures) = score_range, data
    meta = {"dataset": dataset, "measures": measures,
            "score_range": f"about {worst:g} (worst) to {best:g} (best); higher is better",
            **(extra or {}), "license": _LICENSE, "paper": _PAPER}
    return WeightsEntry(name, filename, filename.rsplit("-", 1)[1].split(".", 1)[0], kind=kind, meta=meta,
                        build=BUILD_BY_LAYOUT[layout or kind], resize=resize, score_range=score_range,
                        max_bytes=mib * 2**20)


#: Every official checkpoint, by unique name, full-reference first: :data:`WEIGHTS` and :data:`NR_WEIGHTS` read it.
#: The face models are pyiqa's topiq_nr-face, -face-v1 and topiq_nr_swin-face (pyiqa aligns each face first).
REGISTRY: dict[str, WeightsEntry] = {e.name: e for e in (
    _entry("kadid", "cfanet_fr_kadid_res50-2c4cc61d.pth", "fr",
           ("KADID-10k", "fidelity to a reference (synthetic distortions)"), 192),
    _entry("pipal", "cfanet_fr_pipal_res50-69bbe5ba.pth", "fr",
           ("PIPAL", "fidelity to a reference (incl. GAN/SR outputs)"), 192),
    _entry("koniq", "cfanet_nr_koniq_res50-9a73138b.pth", "nr",
           ("KonIQ-10k", "technical quality of in-the-wild photos"), 256),
    _entry("spaq", "cfanet_nr_spaq_res50-a7f799ac.pth", "nr", ("SPAQ", "quality of smartphone photos"), 256),
    _entry("flive", "cfanet_nr_flive_res50-ded1c74e.pth", "nr",
           ("FLIVE (PaQ-2-PiQ)", "quality of in-the-wild photos"), 256, resize=384),
    _entry("ava", "cfanet_iaa_ava_res50-3cd62bb3.pth", "iaa", _AVA, 384, resize=384, score_range=(1.0, 10.0)),
    _entry("ava_swin", "cfanet_iaa_ava_swin-393b41b4.pth", "iaa", _AVA, 560, "iaa_swin", score_range=(1.0, 10.0),
           extra=_SWIN),  # pyiqa's topiq_iaa
    _entry("face", "topiq_nr_cgfiqa_res50-0a8b8e4f.pth", "nr", ("CGFIQA-40k", "quality of face images"), 256,
           resize=512, extra=_FACE),
    _entry("face_v1", "topiq_nr_gfiqa_res50-d76bf1ae.pth", "nr", ("GFIQA-20k", "quality of face images"), 256,
           resize=512, extra=_FACE),
    _entry("face_swin", "topiq_nr_gfiqa_swin-7bb80a60.pth", "nr", ("GFIQA-20k", "quality of face images"), 480,
           "nr_swin", extra={**_FACE, **_SWIN}),
)}

def _names(kinds: tuple[Kind, ...]) -> list[str]:
    return [name for name, e in REGISTRY.items() if e.kind in kinds]


def list_weights(kind: str | None = None) -> list[str]:
    """Names of the registry's checkpoints in registry order, only those of ``kind`` if given (else a ValueError)."""
    return _names(KINDS if kind is None else (check_kind(kind),))


class _OfKinds(Mapping[str, WeightsEntry]):
    """The entries of :data:`REGISTRY` of some kinds, read at each access (read-only: change REGISTRY)."""

    def __init__(self, *kinds: Kind) -> None:
        self.kinds = kinds

    def __getitem__(self, name: str) -> WeightsEntry:
        return {n: REGISTRY[n] for n in _names(self.kinds)}[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_names(self.kinds))

    def __len__(self) -> int:
        return len(_names(self.kinds))


#: The weights each kind uses when none are named.
DEFAULT_WEIGHTS_BY_KIND: Final[Mapping[str, str]] = {"fr": "kadid", "nr": "koniq", "iaa": "ava"}
#: Full-reference (TOPIQ-FR) checkpoints, for :class:`~topiq_loss.TOPIQLoss`.
WEIGHTS: Mapping[str, WeightsEntry] = _OfKinds("fr")
DEFAULT_WEIGHTS = DEFAULT_WEIGHTS_BY_KIND["fr"]
#: No-reference checkpoints (quality and aesthetics), for :class:`~topiq_loss.TOPIQNRLoss`.
NR_WEIGHTS: Mapping[str, WeightsEntry] = _OfKinds("nr", "iaa")
DEFAULT_NR_WEIGHTS = DEFAULT_WEIGHTS_BY_KIND["nr"]


def get_weights_entry(name: str, registry: Mapping[str, WeightsEntry] = REGISTRY) -> WeightsEntry:
    """The registry entry called ``name``; a ValueError lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise WeightsArgumentError(
            f"`weights` must be one of {sorted(registry)}, a path to a checkpoint file, or {RANDOM!r}; got {name!r}"
        ) from None


def entry_for_file(filename: str, registry: Mapping[str, WeightsEntry] | None = None) -> WeightsEntry | None:
    """The entry whose published file is ``filename`` (in :data:`REGISTRY`, read at call time, by default), or None."""
    entries = registry if registry is not None else REGISTRY
    return next((e for e in entries.values() if e.filename == filename), None)
