"""Registry of the official CFANet-FR (TOPIQ-FR) checkpoints.

Only metadata lives here; :mod:`topiq_loss.hub` downloads, verifies and caches.
The weights are the TOPIQ authors' and carry their terms (non-commercial use);
this package never bundles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WeightsEntry", "WEIGHTS", "DEFAULT_WEIGHTS", "get_weights_entry"]

_GITHUB = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"
_HF = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"

_PAPER = (
    "Chen et al., TOPIQ: A Top-down Approach from Semantics to Distortions for "
    "Image Quality Assessment, IEEE TIP 2024"
)
_LICENSE = "TOPIQ authors' terms (IQA-PyTorch weights): non-commercial research use"


@dataclass(frozen=True)
class WeightsEntry:
    """One official checkpoint.

    Attributes:
        name: registry key (``"kadid"``, ``"pipal"``).
        filename: file name as published; torch.hub-style ``<stem>-<sha256[:8]>.pth``.
        sha256_prefix: the published hash prefix (no full digest is published).
        urls: download locations in priority order.
        meta: training data, score range, licence, paper.
    """

    name: str
    filename: str
    sha256_prefix: str
    urls: tuple[str, ...]
    meta: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


def _entry(name: str, filename: str, dataset: str) -> WeightsEntry:
    prefix = filename.rsplit("-", 1)[1].split(".", 1)[0]
    return WeightsEntry(
        name=name,
        filename=filename,
        sha256_prefix=prefix,
        urls=(f"{_GITHUB}/{filename}", f"{_HF}/{filename}"),
        meta={
            "dataset": dataset,
            "score_range": "about 0 (worst) to 1 (best); higher is better",
            "license": _LICENSE,
            "paper": _PAPER,
        },
    )


WEIGHTS: dict[str, WeightsEntry] = {
    "kadid": _entry("kadid", "cfanet_fr_kadid_res50-2c4cc61d.pth", "KADID-10k"),
    "pipal": _entry("pipal", "cfanet_fr_pipal_res50-69bbe5ba.pth", "PIPAL"),
}
DEFAULT_WEIGHTS = "kadid"


def get_weights_entry(name: str) -> WeightsEntry:
    """The registry entry called ``name``; a ValueError lists the valid names."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(
            f"`weights` must be one of {sorted(WEIGHTS)}, a path to a checkpoint file, "
            f"or None; got {name!r}"
        ) from None
