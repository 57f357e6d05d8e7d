"""``topiq-loss score --metric lpips+``: the TOPIQ paper's LPIPS+ distance from the command line.

Random LPIPS weights (no download): the scores are checked against the loss the command
held, and the report must say they are meaningless and that lower is better.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import distort, smooth_images

import topiq_loss.cli.scorer as cli_scorer
from topiq_loss import LPIPSPlusLoss
from topiq_loss.cli.app import main, read_image, to_pil


@pytest.fixture(scope="module")
def random_lpips_plus() -> LPIPSPlusLoss:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LPIPSPlusLoss(net="alex", weights=None)


@pytest.fixture()
def asked(monkeypatch, random_lpips_plus) -> list:
    """The command's LPIPS+ factory returns the module's random network, recording the weights asked for."""
    seen: list = []

    def new_lpips_plus(weights):
        seen.append(weights)
        return random_lpips_plus

    monkeypatch.setattr(cli_scorer, "new_lpips_plus", new_lpips_plus)
    return seen


@pytest.fixture()
def pair(tmp_path) -> tuple[str, str]:
    ref = smooth_images(1, 40, 56, seed=61)
    to_pil(distort(ref, 62)).save(tmp_path / "d.png")
    to_pil(ref).save(tmp_path / "r.png")
    return str(tmp_path / "d.png"), str(tmp_path / "r.png")


def test_lpips_plus_score_is_the_distance_and_says_lower_is_better(pair, asked, random_lpips_plus, capsys):
    assert main(["score", *pair, "--metric", "lpips+", "--weights", "random", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    with torch.no_grad():
        want = float(random_lpips_plus.score(read_image(pair[0]), read_image(pair[1])))
    assert asked == [None]
    assert got["metric"] == "LPIPS+" and got["higher_is_better"] is False and got["random_weights"] is True
    assert got["mean"] == pytest.approx(want, rel=1e-6) and want > 0
    assert main(["score", *pair, "--metric", "lpips+", "--weights", "random"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("LPIPS+ (random weights, meaningless) ") and text.endswith(", lower is better")
    # The default weights are LPIPS's own, named as such (the factory is what downloads them).
    assert main(["score", *pair, "--metric", "lpips+"]) == 0
    assert asked[-1] == "default" and capsys.readouterr().out.startswith("LPIPS+ (default) ")


def test_lpips_plus_over_folders_and_identical_images(tmp_path, asked, capsys):
    dist, ref = tmp_path / "dist", tmp_path / "ref"
    dist.mkdir()
    ref.mkdir()
    for k in range(2):
        img = smooth_images(1, 36, 36, seed=70 + k)
        to_pil(img).save(ref / f"{k}.png")
        to_pil(img).save(dist / f"{k}.png")  # identical: the distance is 0
    assert main(["score", str(dist), str(ref), "--metric", "lpips+", "--weights", "random", "-q"]) == 0
    assert float(capsys.readouterr().out) == 0.0


def test_lpips_plus_needs_a_reference(pair, asked, capsys):
    assert main(["score", pair[0], "--metric", "lpips+", "--weights", "random"]) == 2
    assert "--metric lpips+ needs REF" in capsys.readouterr().err
    assert asked == []  # refused before any network is built
