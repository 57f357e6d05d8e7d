"""Registry of the official CFANet checkpoints (TOPIQ-FR, TOPIQ-NR, TOPIQ-IAA, ResNet50): metadata only.

:data:`REGISTRY` holds every entry under a unique name; each knows its file, its kind
(``"fr"``, ``"nr"``, ``"iaa"``), the network it fits (``build``), its input resize and score
range; its sources follow from its file name (:mod:`topiq_loss.weights.hub` fetches and checks).
The weights are the TOPIQ authors' and carry their terms (non-commercial use); never bundled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import torch.nn as nn

from .._errors import WeightsArgumentError, WeightsError, WeightsFileNotFoundError, WeightsKindError
from ..models.cfanet_fr import CFANetFR
from ..models.cfanet_nr import CFANetNR

__all__ = ["BUILD_BY_KIND", "BUILD_BY_LAYOUT", "DEFAULT_NR_WEIGHTS", "DEFAULT_WEIGHTS", "DEFAULT_WEIGHTS_BY_KIND",
           "HUB_REPO", "KINDS", "Kind", "LAYOUT_KINDS", "NR_WEIGHTS", "RANDOM", "RELEASE", "REGISTRY", "WEIGHTS",
           "WeightsEntry", "WeightsArgumentError", "WeightsError", "WeightsFileNotFoundError", "WeightsKindError",
           "check_kind", "entry_for_file", "is_random", "get_weights_entry", "list_weights"]

#: Where the official files are published: the Hugging Face Hub repository pyiqa fetches
#: them from, and the GitHub release that holds the same files.
HUB_REPO = "chaofengc/IQA-PyTorch-Weights"
RELEASE = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"

_PAPER = "Chen et al., TOPIQ: A Top-down Approach from Semantics to Distortions for Image Quality Assessment, IEEE TIP 2024"
_LICENSE = "TOPIQ authors' terms (IQA-PyTorch weights): non-commercial research use"

#: The ``weights=`` spelling of an untrained network (tests only), in Python, YAML and
#: on the command line alike; ``None`` means the same.
RANDOM = "random"


def is_random(weights: object) -> bool:
    """True for the spellings of random weights, :data:`RANDOM` and ``None``: the one
    place that reads them, for the TOPIQ and LPIPS networks, losses, metrics and plugs."""
    return weights is None or (isinstance(weights, str) and weights == RANDOM)


#: What a checkpoint scores: ``"fr"`` full-reference quality (TOPIQ-FR), ``"nr"``
#: no-reference quality (TOPIQ-NR), ``"iaa"`` aesthetics (TOPIQ-IAA). The same names as
#: the checkpoint layouts told from the tensors (:data:`topiq_loss.weights.checkpoint.LAYOUTS`).
Kind = Literal["fr", "nr", "iaa"]
KINDS: Final[tuple[Kind, ...]] = ("fr", "nr", "iaa")

#: The (randomly initialised) network each kind of checkpoint loads into (its ResNet50
#: layout; the Swin-B layouts are in :data:`BUILD_BY_LAYOUT`).
BUILD_BY_KIND: Final[Mapping[str, Callable[[], nn.Module]]] = {"fr": CFANetFR, "nr": CFANetNR, "iaa": CFANetNR.aesthetics}

#: The kind of each checkpoint layout (:data:`topiq_loss.weights.checkpoint.LAYOUTS`):
#: a layout is a kind and a backbone.
LAYOUT_KINDS: Final[Mapping[str, Kind]] = {
    "fr": "fr",
    "nr": "nr",
    "iaa": "iaa",
    "nr_swin": "nr",
    "iaa_swin": "iaa",
}

#: The (randomly initialised) network each checkpoint layout loads into.
BUILD_BY_LAYOUT: Final[Mapping[str, Callable[[], nn.Module]]] = {
    **BUILD_BY_KIND,
    "nr_swin": CFANetNR.swin,
    "iaa_swin": CFANetNR.swin_aesthetics,
}


def check_kind(kind: object) -> Kind:
    """``kind`` if it is one of :data:`KINDS`; a ValueError naming ``kind`` otherwise."""
    for known in KINDS:
        if isinstance(kind, str) and kind == known:
            return known
    raise ValueError(f"`kind` must be one of {KINDS} or None; got {kind!r}")


@dataclass(frozen=True)
class WeightsEntry:
    """One official checkpoint.

    Attributes:
        name: registry key (``"kadid"``, ``"koniq"``, ...).
        kind: what it scores, one of :data:`KINDS` (``build`` must make that network).
        filename: file name as published; torch.hub-style ``<stem>-<sha256[:8]>.pth``.
        sha256_prefix: the hash prefix in the file name.
        hub_repo: the Hugging Face Hub repository holding ``filename``.
        release: base URL of the GitHub release holding ``filename``.
        build: makes the (randomly initialised) network the file loads into (one of
            :data:`BUILD_BY_LAYOUT`).
        resize: short side the model was evaluated at (antialiased resize), or None
            to take images as given (the Swin networks resize to 384x384 themselves).
        score_range: (worst, best) score, used to map a score to a 0-is-best loss.
        sha256: the file's full digest where someone with the official file has
            filled it in. When set, only a file with exactly this digest is accepted.
        max_bytes: a larger file is refused before it is hashed (the ResNet50 CFANet files
            are about 138-290 MiB, the Swin-B ones 400-490 MiB).
        meta: training data, what it measures, licence, paper.
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


def _entry(
    name: str,
    filename: str,
    kind: Kind,
    dataset: str,
    measures: str,
    layout: str | None = None,
    extra_meta: Mapping[str, str] | None = None,
    **kwargs: object,
) -> WeightsEntry:
    prefix = filename.rsplit("-", 1)[1].split(".", 1)[0]
    score_range: tuple[float, float] = kwargs.get("score_range", (0.0, 1.0))  # type: ignore[assignment]
    worst, best = score_range
    return WeightsEntry(
        name=name,
        filename=filename,
        sha256_prefix=prefix,
        kind=kind,
        build=BUILD_BY_LAYOUT[layout or kind],
        meta={
            "dataset": dataset,
            "measures": measures,
            "score_range": f"about {worst:g} (worst) to {best:g} (best); higher is better",
            **(extra_meta or {}),
            "license": _LICENSE,
            "paper": _PAPER,
        },
        **kwargs,  # type: ignore[arg-type]
    )


_SWIN = {"backbone": "Swin-B (window 12); every image is resized to 384x384 (antialiased) by the network"}
_FACE = {"input": "expects aligned, centred face crops (FFHQ-style); no face alignment is done"}


#: Every official checkpoint, by unique name, full-reference first. The one registry:
#: :data:`WEIGHTS` and :data:`NR_WEIGHTS` read it.
REGISTRY: dict[str, WeightsEntry] = {
    "kadid": _entry(
        "kadid", "cfanet_fr_kadid_res50-2c4cc61d.pth", "fr", "KADID-10k",
        "fidelity to a reference (synthetic distortions)",
    ),
    "pipal": _entry(
        "pipal", "cfanet_fr_pipal_res50-69bbe5ba.pth", "fr", "PIPAL", "fidelity to a reference (incl. GAN/SR outputs)"
    ),
    "koniq": _entry(
        "koniq", "cfanet_nr_koniq_res50-9a73138b.pth", "nr", "KonIQ-10k", "technical quality of in-the-wild photos",
        max_bytes=256 * 2**20,
    ),
    "spaq": _entry(
        "spaq", "cfanet_nr_spaq_res50-a7f799ac.pth", "nr", "SPAQ", "quality of smartphone photos",
        max_bytes=256 * 2**20,
    ),
    "flive": _entry(
        "flive", "cfanet_nr_flive_res50-ded1c74e.pth", "nr", "FLIVE (PaQ-2-PiQ)", "quality of in-the-wild photos",
        resize=384, max_bytes=256 * 2**20,
    ),
    "ava": _entry(
        "ava", "cfanet_iaa_ava_res50-3cd62bb3.pth", "iaa", "AVA", "aesthetics (expected 1..10 rating)",
        resize=384, score_range=(1.0, 10.0), max_bytes=384 * 2**20,
    ),
    # pyiqa's topiq_iaa (its default aesthetics model).
    "ava_swin": _entry(
        "ava_swin", "cfanet_iaa_ava_swin-393b41b4.pth", "iaa", "AVA", "aesthetics (expected 1..10 rating)",
        layout="iaa_swin", extra_meta=_SWIN, score_range=(1.0, 10.0), max_bytes=560 * 2**20,
    ),
    # pyiqa's topiq_nr-face, topiq_nr-face-v1 and topiq_nr_swin-face (test_img_size=512 for
    # the ResNet50 ones). pyiqa aligns each face first (facexlib: one image, no gradient).
    "face": _entry(
        "face", "topiq_nr_cgfiqa_res50-0a8b8e4f.pth", "nr", "CGFIQA-40k", "quality of face images",
        extra_meta=_FACE, resize=512, max_bytes=256 * 2**20,
    ),
    "face_v1": _entry(
        "face_v1", "topiq_nr_gfiqa_res50-d76bf1ae.pth", "nr", "GFIQA-20k", "quality of face images",
        extra_meta=_FACE, resize=512, max_bytes=256 * 2**20,
    ),
    "face_swin": _entry(
        "face_swin", "topiq_nr_gfiqa_swin-7bb80a60.pth", "nr", "GFIQA-20k", "quality of face images",
        layout="nr_swin", extra_meta={**_FACE, **_SWIN}, max_bytes=480 * 2**20,
    ),
}

#: The weights each kind uses when none are named.
DEFAULT_WEIGHTS_BY_KIND: Final[Mapping[str, str]] = {"fr": "kadid", "nr": "koniq", "iaa": "ava"}


def list_weights(kind: str | None = None) -> list[str]:
    """Names of the registry's checkpoints in registry order, only those of ``kind`` if given.

    Raises:
        ValueError: ``kind`` is not None, ``"fr"``, ``"nr"`` or ``"iaa"``.
    """
    kinds = KINDS if kind is None else (check_kind(kind),)
    return [name for name, e in REGISTRY.items() if e.kind in kinds]


class _OfKinds(Mapping[str, WeightsEntry]):
    """The entries of :data:`REGISTRY` of some kinds, read at each access (read-only:
    change :data:`REGISTRY` to change them)."""

    def __init__(self, *kinds: Kind) -> None:
        self.kinds = kinds

    def __getitem__(self, name: str) -> WeightsEntry:
        if REGISTRY[name].kind not in self.kinds:
            raise KeyError(name)
        return REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, e in REGISTRY.items() if e.kind in self.kinds])

    def __len__(self) -> int:
        return sum(e.kind in self.kinds for e in REGISTRY.values())


#: Full-reference (TOPIQ-FR) checkpoints, for :class:`~topiq_loss.TOPIQLoss`.
WEIGHTS: Mapping[str, WeightsEntry] = _OfKinds("fr")
DEFAULT_WEIGHTS = DEFAULT_WEIGHTS_BY_KIND["fr"]

#: No-reference checkpoints (TOPIQ-NR quality, TOPIQ-IAA aesthetics), for
#: :class:`~topiq_loss.TOPIQNRLoss`.
NR_WEIGHTS: Mapping[str, WeightsEntry] = _OfKinds("nr", "iaa")
DEFAULT_NR_WEIGHTS = DEFAULT_WEIGHTS_BY_KIND["nr"]


def get_weights_entry(name: str, registry: Mapping[str, WeightsEntry] = REGISTRY) -> WeightsEntry:
    """The registry entry called ``name``; a ValueError lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise WeightsArgumentError(
            f"`weights` must be one of {sorted(registry)}, a path to a checkpoint file, "
            f"or {RANDOM!r}; got {name!r}"
        ) from None


def entry_for_file(filename: str, registry: Mapping[str, WeightsEntry] | None = None) -> WeightsEntry | None:
    """The entry whose published file is called ``filename`` (in :data:`REGISTRY` by
    default, read at call time), or None."""
    entries = registry if registry is not None else REGISTRY
    return next((e for e in entries.values() if e.filename == filename), None)
