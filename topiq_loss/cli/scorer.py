"""The frozen network a command scores with, built once, and the name it reports under.

Its own module so that the folder runner (:mod:`.folders`) and the commands
(:mod:`.score`) both use it without importing each other.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..losses.fr import TOPIQLoss
from ..losses.lpips import LPIPSPlusLoss
from ..losses.nr import TOPIQNRLoss
from ..weights.registry import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS, NR_WEIGHTS, WEIGHTS
from .report import RANDOM, Report

__all__ = ["DEFAULT", "METRICS", "Scorer", "new_loss", "new_lpips_plus"]


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
