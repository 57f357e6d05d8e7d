"""The ``score`` and ``map`` commands: one network per run, scores that say what they are.

With REF the network is TOPIQ-FR, without it TOPIQ-NR; ``--metric lpips+`` scores the
TOPIQ paper's LPIPS+ distance instead (REF needed). A folder as DIST scores every image in
it (see :mod:`topiq_loss.cli_folders`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .cli_folders import Item, batches, check_same_size, item_label, naming, pair_by_stem, score_folders, score_named
from .cli_outputs import check_outputs
from .cli_report import RANDOM, Format, Report, Row, unpaired_warning
from .hub import default_cache_dir
from .images import display_name, image_files, read_image, save_image, writable_format
from .loss import TOPIQLoss
from .loss_nr import TOPIQNRLoss
from .lpips_loss import LPIPSPlusLoss
from .maps import render_maps
from .weights import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS, NR_WEIGHTS, REGISTRY, WEIGHTS

__all__ = ["DEFAULT", "METRICS", "Scorer", "map_command", "new_lpips_plus", "new_loss", "score_command", "weights_files"]

#: ``--weights`` default: kadid with a reference, koniq without (LPIPS+: its default weights).
DEFAULT = "default"
#: ``--metric`` choices of ``score``.
METRICS = ("topiq", "lpips+")


def new_loss(reference: bool, weights: str | None, cache_dir: str | None) -> TOPIQLoss | TOPIQNRLoss:
    """The frozen loss whose ``score`` the commands report (tests substitute a cached one)."""
    if reference:
        return TOPIQLoss(weights=weights, cache_dir=cache_dir)
    return TOPIQNRLoss(weights=weights, cache_dir=cache_dir)


def new_lpips_plus(weights: str | None) -> LPIPSPlusLoss:
    """The frozen LPIPS+ (AlexNet) whose distance ``--metric lpips+`` reports (tests substitute one)."""
    return LPIPSPlusLoss(net="alex", weights=weights)


@dataclass
class Scorer:
    """A frozen network built once, with the name its scores are reported under."""

    loss: TOPIQLoss | TOPIQNRLoss | LPIPSPlusLoss
    weights: str  # registry name, checkpoint file name, or "random"
    device: str

    @property
    def metric(self) -> str:
        if isinstance(self.loss, LPIPSPlusLoss):
            return "LPIPS+"
        return "TOPIQ-FR" if isinstance(self.loss, TOPIQLoss) else "TOPIQ-NR"

    @classmethod
    def build(
        cls, weights: str | None, reference: bool, device: str, cache_dir: str | None, metric: str = "topiq"
    ) -> Scorer:
        """``weights`` as ``--weights`` gives it (None: random, ``"default"``: per kind).

        ``metric="lpips+"`` needs ``reference``; its weights are ``"default"`` (downloaded
        through torchvision's cache, so ``cache_dir`` does not apply), a path, or random.
        """
        if metric not in METRICS:
            raise ValueError(f"`--metric` must be one of {METRICS}; got {metric!r}")
        if metric == "lpips+":
            if not reference:
                raise ValueError("--metric lpips+ needs REF: LPIPS+ is a full-reference distance")
            label = RANDOM if weights is None else weights if weights == DEFAULT else Path(weights).name
        else:
            registry = WEIGHTS if reference else NR_WEIGHTS
            if weights == DEFAULT:
                weights = DEFAULT_WEIGHTS if reference else DEFAULT_NR_WEIGHTS
            label = RANDOM if weights is None else weights if weights in registry else Path(weights).name
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = (new_lpips_plus(weights) if metric == "lpips+" else new_loss(reference, weights, cache_dir)).to(device)
        # One plain line each (a bare ``plain`` score of random weights carries no other mark).
        for w in caught:
            print(f"topiq-loss: warning: {w.message}", file=sys.stderr)
        return cls(loss, label, device)

    def report(self, folder: bool) -> Report:
        # TOPIQ reports a quality score; LPIPS+ a distance.
        return Report(self.metric, self.weights, higher_is_better=not isinstance(self.loss, LPIPSPlusLoss), folder=folder)

    @torch.no_grad()
    def score(self, dist: torch.Tensor, ref: torch.Tensor | None) -> list[float]:
        """Scores of a batch (N, 3, H, W) in [0, 1] (``ref`` the same shape, or None for NR)."""
        if isinstance(self.loss, (TOPIQLoss, LPIPSPlusLoss)):
            if ref is None:
                raise ValueError(f"{self.metric} needs REF")
            out = self.loss.score(dist.to(self.device), ref.to(self.device))
        else:
            out = self.loss.score(dist.to(self.device))
        return [float(s) for s in out.double().cpu()]


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
