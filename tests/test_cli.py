"""The console script: score an image pair, demo, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import distort, smooth_images

from topiq_loss import TOPIQLoss
from topiq_loss.cli import main, read_image, to_pil


def _write_png(path, img):
    to_pil(img).save(path)


def test_score_prints_the_model_score(tmp_path, weights_file, capsys):
    ref = smooth_images(1, 40, 56, seed=21)
    dist = distort(ref, 22)
    _write_png(tmp_path / "d.png", dist)
    _write_png(tmp_path / "r.png", ref)
    assert main(["score", str(tmp_path / "d.png"), str(tmp_path / "r.png"), "--weights", str(weights_file)]) == 0
    printed = float(capsys.readouterr().out.strip())
    d, r = read_image(tmp_path / "d.png"), read_image(tmp_path / "r.png")
    assert d.shape == (1, 3, 40, 56) and d.dtype == torch.float32
    with torch.no_grad():
        want = TOPIQLoss(weights=str(weights_file)).score(d, r).item()
    assert printed == pytest.approx(want, abs=1e-6)


def test_score_size_mismatch_is_an_error(tmp_path, weights_file, capsys):
    _write_png(tmp_path / "a.png", smooth_images(1, 40, 40, 1))
    _write_png(tmp_path / "b.png", smooth_images(1, 48, 40, 1))
    assert main(["score", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--weights", str(weights_file)]) == 2
    assert "same size" in capsys.readouterr().err


def test_score_missing_file(tmp_path, capsys):
    assert main(["score", str(tmp_path / "x.png"), str(tmp_path / "y.png")]) == 2
    assert "x.png" in capsys.readouterr().err


def test_demo_runs_with_given_weights(weights_file, capsys):
    pytest.importorskip("skimage", reason="the demo needs scikit-image (the [examples] extra)")
    assert main(["demo", "--weights", str(weights_file), "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 11 and "JPEG, quality 5" in out
