"""Folder scoring: pairing by stem, batching by size, CSV/JSON rows equal to single-pair scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import distort, smooth_images
from PIL import Image
from test_cli import patch_losses

from topiq_loss.cli.app import main, to_pil
from topiq_loss.cli.folders import PIXEL_BUDGET, batches, pair_by_stem


@pytest.fixture()
def cached_losses(monkeypatch, net, weights_file):
    patch_losses(monkeypatch, net, weights_file)


@pytest.fixture()
def folders(tmp_path):
    """DIST and REF folders: three 32x40 pairs (one a JPEG), one 40x32 pair, an orphan on each side."""
    dist, ref = tmp_path / "dist", tmp_path / "ref"
    dist.mkdir()
    ref.mkdir()
    for k, (name, (h, w)) in enumerate({"a": (32, 40), "b": (32, 40), "c": (40, 32), "d": (32, 40)}.items()):
        r = smooth_images(1, h, w, seed=300 + k)
        to_pil(r).save(ref / f"{name}.png")
        to_pil(distort(r, 310 + k)).save(dist / (f"{name}.jpg" if name == "b" else f"{name}.png"))
    to_pil(smooth_images(1, 32, 40, seed=320)).save(dist / "only_dist.png")
    to_pil(smooth_images(1, 32, 40, seed=321)).save(ref / "only_ref.PNG")
    (dist / "notes.txt").write_text("not an image")
    return dist, ref


def test_pairing_by_stem_names_every_orphan(folders):
    dist, ref = folders
    pairs, unpaired = pair_by_stem(dist, ref)
    assert [(d.name, r.name) for d, r in pairs] == [("a.png", "a.png"), ("b.jpg", "b.png"), ("c.png", "c.png"),
                                                    ("d.png", "d.png")]
    assert unpaired == [str(dist / "only_dist.png"), str(ref / "only_ref.PNG")]


def test_batches_group_equal_sizes_within_the_caps(folders):
    pairs, _ = pair_by_stem(*folders)
    groups = list(batches(pairs, batch_size=2))
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3]
    assert [sorted(g) for g in groups] == [[0, 1], [3], [2]]  # by (H, W): 32x40 twice, 32x40, 40x32
    side = int((PIXEL_BUDGET // 2) ** 0.5) + 1  # two of these exceed the pixel budget
    big = folders[0] / "big.png"
    Image.new("RGB", (side, side)).save(big)
    assert [len(g) for g in batches([(big, None)] * 3, 256)] == [1, 1, 1]
    assert [len(g) for g in batches([(folders[0] / "a.png", None)] * 3, 256)] == [3]


def test_folder_rows_equal_single_pair_scores(folders, tmp_path, weights_file, cached_losses, capsys):
    dist, ref = folders
    out_csv, out_json = tmp_path / "s.csv", tmp_path / "s.json"
    w = ["--weights", str(weights_file)]
    assert main(["score", str(dist), str(ref), *w, "--batch-size", "2", "--csv", str(out_csv), "--json", str(out_json)]) == 0
    out, err = capsys.readouterr()
    assert "2 unpaired files not scored" in err and "only_dist.png" in err and "only_ref.PNG" in err
    assert "over 4 images: mean" in out and "%|" not in err  # no progress bar: stderr is not a terminal
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a.png", "b.jpg", "c.png", "d.png"]
    assert {r["weights"] for r in rows} == {"seeded_untrained.pth"}
    summary = json.loads(out_json.read_text())
    assert summary["unpaired"] == [str(dist / "only_dist.png"), str(ref / "only_ref.PNG")]
    scores = np.array([float(r["score"]) for r in rows])
    assert summary["mean"] == pytest.approx(scores.mean(), abs=1e-9) and summary["std"] == pytest.approx(scores.std())
    assert [r["score"] for r in summary["images"]] == pytest.approx(scores.tolist(), abs=1e-12)
    for row, s in zip(rows, scores, strict=True):
        d = next(dist.glob(Path(row["name"]).stem + ".*"))
        assert main(["score", str(d), str(ref / (d.stem + ".png")), *w, "--format", "plain"]) == 0
        assert float(capsys.readouterr().out) == pytest.approx(s, abs=1e-4)


def test_no_reference_folder_and_progress_bar(tmp_path, weights_file, cached_losses, capsys, monkeypatch):
    import sys

    (tmp_path / "imgs").mkdir()
    for k in range(3):
        to_pil(smooth_images(1, 32, 32 + 8 * (k % 2), seed=330 + k)).save(tmp_path / "imgs" / f"x{k}.png")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["score", str(tmp_path / "imgs"), "--weights", "random", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert got["metric"] == "TOPIQ-NR" and got["random_weights"] and got["count"] == 3 and got["unpaired"] == []
    assert "3/3" in err  # the bar, on a terminal
    assert main(["score", str(tmp_path / "imgs" / "x1.png"), "--weights", "random", "-q"]) == 0
    out, err = capsys.readouterr()
    assert float(out) == pytest.approx(got["images"][1]["score"], abs=1e-4) and "3/3" not in err
    assert main(["score", str(tmp_path / "imgs"), "--weights", "random", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "/3" not in err  # --quiet: no bar even on a terminal, and the bare mean
    assert float(out) == pytest.approx(got["mean"], abs=1e-5)


def test_exif_rotated_image_pairs_with_its_upright_reference(tmp_path, weights_file, cached_losses, capsys):
    for sub in "dru":
        (tmp_path / sub).mkdir()
    ref = smooth_images(1, 40, 32, seed=340)
    upright = to_pil(distort(ref, 341))
    to_pil(ref).save(tmp_path / "r" / "p.png")
    upright.save(tmp_path / "u" / "p.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise; viewers turn it back
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "d" / "p.png", exif=exif)
    w = ["--weights", str(weights_file), "--format", "json"]
    assert main(["score", str(tmp_path / "d"), str(tmp_path / "r"), *w]) == 0
    turned = json.loads(capsys.readouterr().out)["mean"]
    assert main(["score", str(tmp_path / "u"), str(tmp_path / "r"), *w]) == 0
    assert turned == pytest.approx(json.loads(capsys.readouterr().out)["mean"], abs=1e-6)


def test_folder_errors_exit_2_before_any_network(tmp_path, capsys):
    for sub in "dr":
        (tmp_path / sub).mkdir()
    to_pil(smooth_images(1, 32, 32, seed=1)).save(tmp_path / "d" / "a.png")
    to_pil(smooth_images(1, 32, 32, seed=1)).save(tmp_path / "r" / "b.png")
    bad = ["--weights", "no_such_file.pth"]  # reached only if the folders were accepted
    assert main(["score", str(tmp_path / "d"), str(tmp_path / "r"), *bad]) == 2
    assert "no file of" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "d"), str(tmp_path / "r" / "b.png"), *bad]) == 2
    assert "both be files or both be folders" in capsys.readouterr().err
    to_pil(smooth_images(1, 32, 32, seed=2)).save(tmp_path / "d" / "b.jpg")
    to_pil(smooth_images(1, 32, 32, seed=2)).save(tmp_path / "d" / "b.png")
    assert main(["score", str(tmp_path / "d"), str(tmp_path / "r"), *bad]) == 2
    assert "b.jpg and b.png" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "d"), str(tmp_path / "r"), *bad, "--csv", str(tmp_path / "no" / "s.csv")]) == 2
    assert "no folder to write" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "r" / "b.png"), *bad, "--json", str(tmp_path / "r" / "b.png")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    # Without REF_DIR nothing is paired: b.jpg and b.png are two images, so the error is the weights'.
    assert main(["score", str(tmp_path / "d"), *bad]) == 2
    assert "no_such_file.pth" in capsys.readouterr().err
