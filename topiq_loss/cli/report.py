"""What the ``score`` command prints and writes: labelled text, a bare number, or JSON; CSV/JSON files.

Every score says what it is (``TOPIQ-FR (kadid) 0.8123, higher is better``); scores of
random weights say they are meaningless; ``plain`` keeps the bare number scripts read.
Names are made printable once, when a row is made (:func:`~topiq_loss.cli.images.display_name`),
so no writer can fail on a file name and lose the scores of a run.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .images import display_name
from .outputs import OutputFile

__all__ = ["FORMATS", "FORMULA_LEADS", "Report", "Row", "csv_text"]

FORMATS = ("text", "plain", "json")
Format = Literal["text", "plain", "json"]
RANDOM = "random"
#: What a spreadsheet reads as the start of a formula (OWASP's CSV-injection list).
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: a leading ``'`` before a formula-like start.

    Only text cells (names, weights) pass through here; scores are written as numbers, so
    a negative score stays a number.
    """
    return "'" + text if text.startswith(FORMULA_LEADS) else text


@dataclass(frozen=True)
class Row:
    """One scored image: its name (the DIST file's name), score and weights."""

    name: str
    score: float
    weights: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", display_name(self.name))
        object.__setattr__(self, "weights", display_name(self.weights))


@dataclass
class Report:
    """The scores of one run.

    Attributes:
        metric: ``"TOPIQ-FR"``, ``"TOPIQ-NR"`` or ``"LPIPS+"``.
        weights: the registry name, a checkpoint's file name, or ``"random"``.
        higher_is_better: True for TOPIQ's quality scores, False for a distance (LPIPS+).
        rows: one per image, in file-name order.
        unpaired: files of a folder run that had no partner (paths as given).
        folder: whether DIST was a folder (a summary is printed rather than one score).
    """

    metric: str
    weights: str
    higher_is_better: bool = True
    rows: list[Row] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)
    folder: bool = False

    def __post_init__(self) -> None:
        self.weights = display_name(self.weights)

    @property
    def title(self) -> str:
        if self.weights == RANDOM:
            return f"{self.metric} (random weights, meaningless)"
        return f"{self.metric} ({self.weights})"

    def stats(self) -> tuple[float, float]:
        """Mean and population standard deviation of the scores (float64)."""
        scores = [r.score for r in self.rows]
        mean = math.fsum(scores) / len(scores)
        return mean, math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))

    def as_dict(self) -> dict[str, object]:
        mean, std = self.stats()
        return {
            "metric": self.metric,
            "weights": self.weights,
            "random_weights": self.weights == RANDOM,
            "higher_is_better": self.higher_is_better,
            "count": len(self.rows),
            "mean": mean,
            "std": std,
            "unpaired": [display_name(p) for p in self.unpaired],
            "images": [{"name": r.name, "score": r.score, "weights": r.weights} for r in self.rows],
        }

    def render(self, fmt: Format) -> str:
        """The stdout text: ``text`` (labelled), ``plain`` (the bare score or folder mean) or ``json``."""
        if fmt == "json":
            return json.dumps(self.as_dict(), indent=2)
        mean, std = self.stats()
        if fmt == "plain":
            return f"{mean:.6f}"
        direction = "higher is better" if self.higher_is_better else "lower is better"
        if not self.folder:
            return f"{self.title} {mean:.4f}, {direction}"
        width = max(len(r.name) for r in self.rows) + 2
        lines = [f"{r.name:<{width}}{r.score:.4f}" for r in self.rows]
        lines.append(
            f"{self.title} over {len(self.rows)} image{'s' * (len(self.rows) != 1)}: "
            f"mean {mean:.4f}, std {std:.4f}, {direction}"
        )
        return "\n".join(lines)

    def write_csv(self, out: OutputFile) -> None:
        """``name,score,weights`` with one row per image (text cells through :func:`csv_text`)."""
        with open(out.path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["name", "score", "weights"])
            w.writerows([csv_text(r.name), repr(r.score), csv_text(r.weights)] for r in self.rows)

    def write_json(self, out: OutputFile) -> None:
        """:meth:`as_dict` (summary, unpaired files and ``images``: one row per image)."""
        Path(out.path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")


def unpaired_warning(unpaired: Sequence[str]) -> str:
    """One line naming every file left out of a folder run."""
    names = ", ".join(display_name(p) for p in unpaired)
    return f"warning: {len(unpaired)} unpaired file{'s' * (len(unpaired) != 1)} not scored: {names}"
