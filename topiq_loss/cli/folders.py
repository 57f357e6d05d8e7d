"""Folder scoring: pair files by stem, batch images of equal size, one network for the run.

``topiq-loss score DIST_DIR REF_DIR`` pairs ``a.png`` with ``a.jpg`` (any image
extension, same stem); ``topiq-loss score DIR`` scores each image alone (TOPIQ-NR).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .images import display_name, image_files, oriented_size, read_image
from .report import Report, Row

if TYPE_CHECKING:
    from .scorer import Scorer

__all__ = ["batches", "check_same_size", "item_label", "naming", "pair_by_stem", "score_folders", "score_named"]

Item = tuple[Path, Path | None]

#: Pixels per batch at most (eight 512 x 512 images): bounds the activation memory.
PIXEL_BUDGET = 8 * 512 * 512


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for p in image_files(folder):
        found.setdefault(p.stem, []).append(p)
    clashes = [" and ".join(p.name for p in ps) for ps in found.values() if len(ps) > 1]
    if clashes:
        raise ValueError(f"{folder}: files share a stem, so pairing by stem is ambiguous: {'; '.join(clashes)}")
    return {stem: ps[0] for stem, ps in found.items()}


def pair_by_stem(dist_dir: Path, ref_dir: Path | None) -> tuple[list[Item], list[str]]:
    """The (DIST, REF) pairs in stem order, and every file left without a partner.

    Raises:
        ValueError: with REF_DIR, a folder holds two images with one stem; or nothing can
            be scored.
    """
    if ref_dir is None:  # nothing to pair: a.png and a.jpg are two images
        files = image_files(dist_dir)
        if not files:
            raise ValueError(f"DIST folder {dist_dir} holds no image files")
        return [(f, None) for f in files], []
    dist = _by_stem(dist_dir)
    ref = _by_stem(ref_dir)
    pairs: list[Item] = [(dist[s], ref[s]) for s in sorted(dist.keys() & ref.keys())]
    unpaired = [display_name(dist[s]) for s in sorted(dist.keys() - ref.keys())]
    unpaired += [display_name(ref[s]) for s in sorted(ref.keys() - dist.keys())]
    if not pairs:
        raise ValueError(
            f"no file of {dist_dir} has a partner with the same stem in {ref_dir} "
            f"({len(dist)} and {len(ref)} image files)"
        )
    return pairs, unpaired


def batches(items: Sequence[Item], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``items`` in groups whose DIST images have one size (from the headers).

    A group holds at most ``batch_size`` images and :data:`PIXEL_BUDGET` pixels (one
    image at least). Every header, DIST's and REF's, is read here, so a file that is no
    image, or claims a decompression-bomb size, stops the run before any scoring.

    Raises:
        ValueError: naming the file whose header cannot be read.
    """
    sizes = [oriented_size(d) for d, _ in items]
    for _, r in items:
        if r is not None:
            oriented_size(r)
    order = sorted(range(len(items)), key=lambda i: sizes[i])
    group: list[int] = []
    for i in order:
        h, w = sizes[i]
        cap = max(1, min(batch_size, PIXEL_BUDGET // max(1, h * w)))
        if group and (sizes[group[0]] != sizes[i] or len(group) >= cap):
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def check_same_size(dist: torch.Tensor, ref: torch.Tensor, dist_name: object, ref_name: object) -> None:
    """Raise ValueError naming both files when DIST and REF differ in size."""
    if dist.shape != ref.shape:
        names = [display_name(n) if isinstance(n, (str, Path)) else str(n) for n in (dist_name, ref_name)]
        raise ValueError(
            f"DIST and REF must have the same size; got {tuple(dist.shape[-2:])} for {names[0]} and "
            f"{tuple(ref.shape[-2:])} for {names[1]}"
        )


def item_label(item: Item) -> str:
    """How messages name one scored item: the DIST file, and its REF when there is one."""
    d, r = item
    return display_name(d) if r is None else f"{display_name(d)} (REF {display_name(r)})"


@contextmanager
def naming(label: str) -> Iterator[None]:
    """Prefix a ValueError raised inside with ``label``: the network's refusal of one image
    (too small, ...) names the file, in single-file, folder and map runs alike."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None


def score_named(scorer: Scorer, labels: Sequence[str], dist: torch.Tensor, ref: torch.Tensor | None) -> list[float]:
    """``scorer.score`` of a batch whose images ``labels`` name (see :func:`naming`).

    Raises:
        ValueError: ``"<label>: <the network's reason>"`` for the first image refused.
    """
    if len(labels) == 1:
        with naming(labels[0]):
            return scorer.score(dist, ref)
    try:
        return scorer.score(dist, ref)
    except ValueError as exc:
        reason = exc
    # Errors are rare: find the image by scoring each alone.
    for k, label in enumerate(labels):
        score_named(scorer, [label], dist[k : k + 1], None if ref is None else ref[k : k + 1])
    raise ValueError(f"{', '.join(labels)}: {reason}")


def _score_group(scorer: Scorer, items: Sequence[Item], group: list[int]) -> dict[int, float]:
    dists, refs = [], []
    for i in group:
        d_path, r_path = items[i]
        dists.append(read_image(d_path))
        if r_path is not None:
            refs.append(read_image(r_path))
            check_same_size(dists[-1], refs[-1], d_path, r_path)
    # Headers can disagree with the decoded size; score each decoded size on its own.
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, d in enumerate(dists):
        by_shape.setdefault(tuple(d.shape), []).append(k)
    scores: dict[int, float] = {}
    for ks in by_shape.values():
        d = torch.cat([dists[k] for k in ks])
        r = torch.cat([refs[k] for k in ks]) if refs else None
        for k, s in zip(ks, score_named(scorer, [item_label(items[group[k]]) for k in ks], d, r), strict=True):
            scores[group[k]] = s
    return scores


def score_folders(
    scorer: Scorer, items: Sequence[Item], groups: Sequence[list[int]], unpaired: list[str], progress: bool
) -> Report:
    """Score every (DIST, REF) item of :func:`pair_by_stem` (REF None: no-reference) with one network,
    in the ``groups`` of :func:`batches` (read before the network is built).

    ``progress`` shows a bar on stderr when stderr is a terminal.
    """
    from tqdm import tqdm

    scores: dict[int, float] = {}
    bar = tqdm(
        total=len(items), unit="img", file=sys.stderr, disable=not (progress and sys.stderr.isatty()),
        desc=scorer.metric,
    )
    with bar:
        for group in groups:
            scores.update(_score_group(scorer, items, group))
            bar.update(len(group))
    report = scorer.report(folder=True)
    report.unpaired = unpaired
    report.rows = [Row(d.name, scores[i], scorer.weights) for i, (d, _) in enumerate(items)]
    return report
