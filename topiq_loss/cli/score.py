"""The ``score`` and ``map`` commands: one network per run, scores that say what they are.

With REF the network is TOPIQ-FR, without it TOPIQ-NR; ``--metric lpips+`` scores the
TOPIQ paper's LPIPS+ distance instead (REF needed). A folder as DIST scores every image in
it (see :mod:`topiq_loss.cli.folders`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .. import _compat
from ..functional.maps import render_maps
from ..losses.fr import TOPIQLoss
from ..losses.nr import TOPIQNRLoss
from ..weights.hub import default_cache_dir
from ..weights.registry import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS, REGISTRY
from .folders import Item, batches, check_same_size, item_label, naming, pair_by_stem, score_folders, score_named
from .images import display_name, image_files, read_image, save_image, writable_format
from .outputs import check_outputs
from .report import Format, Row, unpaired_warning
from .scorer import DEFAULT, Scorer

__all__ = ["map_command", "score_command", "weights_files"]


def _format(args: argparse.Namespace) -> Format:
    fmt: Format = args.format or ("plain" if args.quiet else "text")
    return fmt


def weights_files(args: argparse.Namespace) -> list[Path]:
    """The weights file a run will read, for the output guard: a ``--weights PATH``, or the
    cached file of a registry name (LPIPS+'s default files live in torchvision's cache)."""
    weights = args.weights
    if weights is None or (weights == DEFAULT and getattr(args, "metric", "topiq") == "lpips+"):
        return []
    if weights == DEFAULT:
        weights = DEFAULT_WEIGHTS if args.ref is not None else DEFAULT_NR_WEIGHTS
    if weights in REGISTRY:
        folder = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        return [folder / REGISTRY[weights].filename]
    return [Path(weights)]


def score_command(args: argparse.Namespace) -> int:
    """``topiq-loss score DIST [REF]`` with files or folders."""
    dist, ref = Path(args.dist), None if args.ref is None else Path(args.ref)
    if ref is not None and dist.is_dir() != ref.is_dir():
        raise ValueError(f"DIST and REF must both be files or both be folders; got {dist} and {ref}")
    folder = dist.is_dir()
    # Every image of the folders, paired or not, is kept from being overwritten.
    reads = [p for p in (dist, ref) if p is not None]
    if folder:
        reads = [f for p in reads for f in image_files(p)]
    outputs = check_outputs({"--csv": args.csv, "--json": args.json}, reads + weights_files(args))
    if folder:
        items, unpaired = pair_by_stem(dist, ref)
        groups = list(batches(items, args.batch_size))  # every header, before the network
        scorer = Scorer.build(args.weights, ref is not None, args.device, args.cache_dir, args.metric)
        report = score_folders(scorer, items, groups, unpaired, progress=not args.quiet)
        if report.unpaired:
            print(unpaired_warning(report.unpaired), file=sys.stderr)
    else:
        item: Item = (dist, ref)
        d, r = _read_pair(item)  # bad files fail before the network is built
        scorer = Scorer.build(args.weights, ref is not None, args.device, args.cache_dir, args.metric)
        report = scorer.report(folder=False)
        report.rows.append(Row(dist.name, score_named(scorer, [item_label(item)], d, r)[0], scorer.weights))
    # One file that cannot be written (disk full, ...) must not cost the others or stdout.
    failed: list[str] = []
    for option, write in (("--csv", report.write_csv), ("--json", report.write_json)):
        if option in outputs:
            try:
                write(outputs[option])
            except OSError as exc:
                failed.append(f"{option} {display_name(outputs[option].path)!r}: {exc.strerror or exc}")
    print(report.render(_format(args)))
    if failed:
        raise OSError(f"scores printed but not written to {'; '.join(failed)}")
    return 0


def _read_pair(item: Item) -> tuple[torch.Tensor, torch.Tensor | None]:
    d_path, r_path = item
    d = read_image(d_path)
    r = None if r_path is None else read_image(r_path)
    if r is not None:
        check_same_size(d, r, d_path, r_path)
    return d, r


def map_command(args: argparse.Namespace) -> int:
    """``topiq-loss map DIST [REF] -o OUT``: the quality maps as an image (format from OUT's name)."""
    inputs = [p for p in (args.dist, args.ref) if p is not None]
    for p in inputs:
        if Path(p).is_dir():
            raise ValueError(f"map takes image files, not folders; got {p}")
    writable_format(args.output)  # before the network is built
    out = check_outputs({"-o": args.output}, [Path(p) for p in inputs] + weights_files(args))["-o"]
    item: Item = (Path(args.dist), None if args.ref is None else Path(args.ref))
    dist, ref = _read_pair(item)
    scorer = Scorer.build(args.weights, ref is not None, args.device, args.cache_dir)
    d = dist.to(args.device)
    with naming(item_label(item)):
        if isinstance(scorer.loss, TOPIQLoss):
            assert ref is not None
            maps = scorer.loss.quality_maps(d, ref.to(args.device))
        else:
            assert isinstance(scorer.loss, TOPIQNRLoss)  # map builds the default metric only
            maps = scorer.loss.quality_maps(d)
    save_image(render_maps(dist, ref, maps, panel=args.panel), out.path)
    report = scorer.report(folder=False)
    report.rows.append(Row(Path(args.dist).name, float(maps.score.double().item()), scorer.weights))
    fmt = _format(args)
    if fmt == "json":
        print(report.render(fmt))
    elif fmt == "plain":
        print(f"{report.render(fmt)} -> {args.output}")
    else:
        print(f"{report.render(fmt)}; maps -> {args.output}")
    return 0


def __getattr__(name: str) -> object:
    # 0.4's names of this module (topiq_loss._compat.MOVED_NAMES), with a FutureWarning.
    return _compat.moved_name(__name__, name)
