"""The command line's output guard and per-file errors.

Every output path (``score --csv/--json``, ``map -o``) is checked before any network is
built: never an input file (by any spelling or link), never a folder, its folder exists,
no two outputs are one file. Every per-file error names the file; a report never loses a
computed score to a file name; CSV text cells cannot start a spreadsheet formula.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from conftest import distort, smooth_images
from test_cli import patch_losses

import topiq_loss.cli.scorer as cli_scorer
from topiq_loss.cli.app import main, to_pil
from topiq_loss.cli.outputs import check_outputs
from topiq_loss.cli.report import Report, Row


@pytest.fixture()
def no_network(monkeypatch):
    """Building any network fails loudly (AssertionError is not an error the CLI reports)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network was built before the outputs were checked")

    monkeypatch.setattr(cli_scorer, "new_loss", refuse)
    monkeypatch.setattr(cli_scorer, "new_lpips_plus", refuse)


@pytest.fixture()
def cached_losses(monkeypatch, net, weights_file):
    patch_losses(monkeypatch, net, weights_file)


def _pair(dist: Path, ref: Path, stem: str, seed: int, size: tuple[int, int] = (32, 40)) -> None:
    r = smooth_images(1, *size, seed=seed)
    to_pil(r).save(ref / f"{stem}.png")
    to_pil(distort(r, seed + 1)).save(dist / f"{stem}.png")


@pytest.fixture()
def folders(tmp_path):
    """dist/ and ref/ with pairs a and b, and an image without a partner in dist/."""
    dist, ref = tmp_path / "dist", tmp_path / "ref"
    dist.mkdir()
    ref.mkdir()
    _pair(dist, ref, "a", 400)
    _pair(dist, ref, "b", 402)
    to_pil(smooth_images(1, 32, 32, seed=404)).save(dist / "lone.png")
    return dist, ref


def _target(kind: str, tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """An output spelling that is (or leads to) an input image, and the file it reaches."""
    dist, ref = tmp_path / "dist", tmp_path / "ref"
    if kind == "dist image":
        return str(dist / "a.png"), dist / "a.png"
    if kind == "ref image":
        return str(ref / "b.png"), ref / "b.png"
    if kind == "unpaired image":
        return str(dist / "lone.png"), dist / "lone.png"
    if kind == "symlink":
        (tmp_path / "link.csv").symlink_to(ref / "a.png")
        return str(tmp_path / "link.csv"), ref / "a.png"
    if kind == "hard link":
        os.link(dist / "b.png", tmp_path / "hard.json")
        return str(tmp_path / "hard.json"), dist / "b.png"
    assert kind == "relative"
    monkeypatch.chdir(tmp_path / "ref")
    return os.path.join("..", "ref", "..", "dist", "a.png"), dist / "a.png"


KINDS = ["dist image", "ref image", "unpaired image", "symlink", "hard link", "relative"]


# ------------------------------------------------------------------ the guard, before any network
@pytest.mark.parametrize("option", ["--csv", "--json"])
@pytest.mark.parametrize("kind", KINDS)
def test_folder_outputs_never_overwrite_an_input(folders, tmp_path, monkeypatch, no_network, capsys, option, kind):
    given, reached = _target(kind, tmp_path, monkeypatch)
    before = reached.read_bytes()
    dist, ref = folders
    assert main(["score", str(dist), str(ref), "--weights", "random", option, given]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and f"{option} '" in err and reached.name in err and "Traceback" not in err
    assert reached.read_bytes() == before


@pytest.mark.parametrize("metric", ["topiq", "lpips+"])
def test_no_reference_folder_and_lpips_runs_are_guarded_too(folders, no_network, capsys, metric):
    dist, ref = folders
    args = ["score", str(dist)] if metric == "topiq" else ["score", str(dist), str(ref), "--metric", "lpips+"]
    before = (dist / "b.png").read_bytes()
    assert main([*args, "--weights", "random", "--json", str(dist / "b.png")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (dist / "b.png").read_bytes() == before


@pytest.mark.parametrize("kind", ["dist image", "ref image", "symlink", "hard link", "relative"])
def test_map_output_never_overwrites_an_input(folders, tmp_path, monkeypatch, no_network, capsys, kind):
    given, reached = _target(kind, tmp_path, monkeypatch)
    if not given.endswith(".png"):  # -o must name an image format: link with an image extension
        os.replace(given, given + ".png")
        given += ".png"
    before = reached.read_bytes()
    dist, ref = tmp_path / "dist", tmp_path / "ref"
    d, r = (dist / "a.png", ref / "a.png") if reached.name == "a.png" else (dist / "b.png", ref / "b.png")
    assert main(["map", str(d), str(r), "-o", given, "--weights", "random"]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "-o '" in err and "Traceback" not in err
    assert reached.read_bytes() == before


def test_single_file_outputs_are_checked_through_links(folders, tmp_path, no_network, capsys):
    dist, ref = folders
    (tmp_path / "s.csv").symlink_to(dist / "a.png")
    for option in ("--csv", "--json"):
        assert main(["score", str(dist / "a.png"), str(ref / "a.png"), option, str(tmp_path / "s.csv")]) == 2
        assert "refusing to overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["folder", "file", "map"])
@pytest.mark.parametrize("problem", ["a folder", "missing folder", "a file as folder"])
def test_unwritable_output_paths_are_refused_before_any_network(folders, tmp_path, no_network, capsys, command, problem):
    dist, ref = folders
    given = {
        "a folder": tmp_path / "out.png",
        "missing folder": tmp_path / "no" / "such" / "out.png",
        "a file as folder": tmp_path / "dist" / "a.png" / "out.png",
    }[problem]
    if problem == "a folder":
        given.mkdir()
    if command == "map":
        args = ["map", str(dist / "a.png"), str(ref / "a.png"), "-o", str(given)]
        option = "-o"
    else:
        inputs = [str(dist), str(ref)] if command == "folder" else [str(dist / "a.png"), str(ref / "a.png")]
        args = ["score", *inputs, "--csv", str(given)]
        option = "--csv"
    assert main([*args, "--weights", "random"]) == 2
    err = capsys.readouterr().err
    want = "is a folder" if problem == "a folder" else "no folder to write"
    assert want in err and f"{option} '" in err and "Traceback" not in err


@pytest.mark.parametrize("link", [False, True])
def test_two_outputs_that_are_one_file_are_refused(folders, tmp_path, no_network, capsys, link):
    dist, ref = folders
    (tmp_path / "s.out").write_text("old")
    other = tmp_path / "s.out"
    if link:
        (tmp_path / "t.out").symlink_to(tmp_path / "s.out")
        other = tmp_path / "t.out"
    args = ["score", str(dist), str(ref), "--weights", "random", "--csv", str(tmp_path / "s.out"), "--json", str(other)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--csv" in err and "--json" in err and "same file" in err
    assert (tmp_path / "s.out").read_text() == "old"


def test_the_weights_file_a_run_reads_is_an_input(folders, tmp_path, weights_file, no_network, capsys):
    from topiq_loss.weights.registry import REGISTRY

    dist, ref = folders
    mine = tmp_path / "mine.pth"
    mine.write_bytes(weights_file.read_bytes())
    assert main(["score", str(dist), str(ref), "--weights", str(mine), "--csv", str(mine)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and mine.read_bytes() == weights_file.read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / REGISTRY["kadid"].filename  # what --weights kadid (the default with REF) reads
    cached.write_bytes(b"checkpoint")
    for args in (["--weights", "kadid"], []):
        assert main(["score", str(dist), str(ref), *args, "--cache-dir", str(cache), "--json", str(cached)]) == 2
        assert "refusing to overwrite" in capsys.readouterr().err and cached.read_bytes() == b"checkpoint"
    odd = tmp_path / "weights.png"  # map -o needs an image extension: a checkpoint with one
    odd.write_bytes(weights_file.read_bytes())
    assert main(["map", str(dist / "a.png"), str(ref / "a.png"), "--weights", str(odd), "-o", str(odd)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and odd.read_bytes() == weights_file.read_bytes()


def test_case_spellings_are_one_file_where_the_file_system_says_so(folders, no_network, capsys):
    dist, ref = folders
    upper = dist / "A.PNG"
    if not upper.exists():
        pytest.skip("this file system tells a.png from A.PNG: they are two files here")
    before = (dist / "a.png").read_bytes()
    assert main(["score", str(dist), str(ref), "--weights", "random", "--csv", str(upper)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and (dist / "a.png").read_bytes() == before


def test_a_dangling_link_is_checked_where_it_points(tmp_path):
    (tmp_path / "link.csv").symlink_to(tmp_path / "gone" / "s.csv")
    with pytest.raises(ValueError, match=r"no folder to write --csv '.*link.csv' into: .*gone is not a folder"):
        check_outputs({"--csv": tmp_path / "link.csv"}, [])
    (tmp_path / "gone").mkdir()
    got = check_outputs({"--csv": tmp_path / "link.csv", "--json": None}, [])
    assert list(got) == ["--csv"] and got["--csv"].path == tmp_path / "link.csv"
    with pytest.raises(ValueError, match="same file"):
        check_outputs({"--csv": tmp_path / "link.csv", "--json": tmp_path / "gone" / "s.csv"}, [])


# ------------------------------------------------------------------ per-file errors name the file
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _truncate(path: Path, keep: int | None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


@pytest.mark.parametrize("side", ["dist", "ref"])
def test_bomb_header_in_a_folder_names_the_file(folders, no_network, capsys, side):
    dist, ref = folders
    _pair(dist, ref, "zz", 410)
    _png_header_only((dist if side == "dist" else ref) / "zz.png", 100_000, 100_000)
    assert main(["score", str(dist), str(ref), "--weights", "random"]) == 2  # refused before the network
    err = capsys.readouterr().err
    assert "zz.png" in err and "decompression bomb" in err and "Traceback" not in err


@pytest.mark.parametrize("keep", [20, 40, None])  # inside the header, just after it, half the data
@pytest.mark.parametrize("mode", ["folder", "file"])
def test_truncated_image_names_the_file(folders, weights_file, cached_losses, capsys, keep, mode):
    dist, ref = folders
    _pair(dist, ref, "cut", 420, size=(64, 64))
    _truncate(dist / "cut.png", keep)
    args = [str(dist), str(ref)] if mode == "folder" else [str(dist / "cut.png"), str(ref / "cut.png")]
    assert main(["score", *args, "--weights", str(weights_file)]) == 2
    err = capsys.readouterr().err
    assert "cut.png" in err and "Traceback" not in err


@pytest.mark.parametrize("mode", ["folder", "file", "map"])
def test_too_small_image_names_the_file(folders, tmp_path, weights_file, cached_losses, capsys, mode):
    dist, ref = folders
    _pair(dist, ref, "tiny", 430, size=(16, 20))
    _pair(dist, ref, "tiny2", 432, size=(16, 20))  # a batch of two: the first refused is named
    args = [str(dist), str(ref)] if mode == "folder" else [str(dist / "tiny.png"), str(ref / "tiny.png")]
    command = ["map", *args, "-o", str(tmp_path / "m.png")] if mode == "map" else ["score", *args]
    assert main([*command, "--weights", str(weights_file)]) == 2
    err = capsys.readouterr().err
    assert "tiny.png" in err and "32x32" in err and "Traceback" not in err


# ------------------------------------------------------------------ reports keep every score
def _bytes_name(folder: Path, name: bytes) -> Path:
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


def test_non_utf8_file_names_keep_every_score(folders, tmp_path, weights_file, cached_losses, capsys):
    dist, ref = folders
    for folder in (dist, ref):
        os.replace(folder / "b.png", _bytes_name(folder, b"\xffb.png"))
    out_csv, out_json = tmp_path / "s.csv", tmp_path / "s.json"
    w = ["--weights", str(weights_file)]
    assert main(["score", str(dist), str(ref), *w, "--csv", str(out_csv), "--json", str(out_json)]) == 0
    out, err = capsys.readouterr()
    with open(out_csv, newline="", encoding="utf-8") as f:  # valid UTF-8 throughout
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a.png", "\\xffb.png"]
    summary = json.loads(out_json.read_bytes().decode("utf-8"))
    assert [i["name"] for i in summary["images"]] == ["a.png", "\\xffb.png"]
    assert [i["score"] for i in summary["images"]] == pytest.approx([float(r["score"]) for r in rows], abs=1e-12)
    assert "\\xffb.png" in out and "over 2 images" in out
    # The same name given as a file: the same label, and the same score.
    bad_dist, bad_ref = _bytes_name(dist, b"\xffb.png"), _bytes_name(ref, b"\xffb.png")
    assert main(["score", str(bad_dist), str(bad_ref), *w, "--format", "json"]) == 0
    single = json.loads(capsys.readouterr().out)["images"][0]
    assert single["name"] == "\\xffb.png" and single["score"] == pytest.approx(summary["images"][1]["score"], abs=1e-4)


def test_non_utf8_names_in_errors_and_unpaired_warnings(folders, weights_file, cached_losses, capsys):
    dist, ref = folders
    to_pil(smooth_images(1, 32, 32, seed=440)).save(_bytes_name(ref, b"\xfe.png"))
    assert main(["score", str(dist), str(ref), "--weights", str(weights_file), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert "\\xfe.png" in err and json.loads(out)["unpaired"][-1].endswith("\\xfe.png")
    _bytes_name(dist, b"\xfd.png").write_bytes(b"not an image")
    os.replace(_bytes_name(ref, b"\xfe.png"), _bytes_name(ref, b"\xfd.png"))
    assert main(["score", str(dist), str(ref), "--weights", str(weights_file)]) == 2
    err = capsys.readouterr().err
    assert "\\xfd.png" in err and "not an image file" in err


def test_report_writers_accept_any_name(tmp_path):
    report = Report("TOPIQ-FR", "kadid", rows=[Row("ok.png", 0.5, "kadid"), Row("\udcff\udcfe.png", 0.25, "kadid")], folder=True)
    report.unpaired = ["dist/\udcfa.png"]
    outputs = check_outputs({"--csv": tmp_path / "s.csv", "--json": tmp_path / "s.json"}, [])
    report.write_csv(outputs["--csv"])
    report.write_json(outputs["--json"])
    text = (tmp_path / "s.csv").read_bytes().decode("utf-8")
    assert "\\xff\\xfe.png,0.25,kadid" in text
    got = json.loads((tmp_path / "s.json").read_bytes().decode("utf-8"))
    assert got["images"][1]["name"] == "\\xff\\xfe.png" and got["unpaired"] == ["dist/\\xfa.png"]
    assert "\\xff\\xfe.png" in report.render("text")


# ------------------------------------------------------------------ spreadsheet formulas
@pytest.mark.parametrize("lead", ["=", "+", "-", "@"])
def test_formula_like_names_are_quoted_in_csv_only(folders, tmp_path, weights_file, cached_losses, capsys, lead):
    dist, ref = folders
    for folder in (dist, ref):
        os.replace(folder / "b.png", folder / f"{lead}b.png")
    out_csv, out_json = tmp_path / "s.csv", tmp_path / "s.json"
    w = ["--weights", str(weights_file)]
    assert main(["score", str(dist), str(ref), *w, "--csv", str(out_csv), "--json", str(out_json)]) == 0
    with open(out_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = sorted(r["name"] for r in rows)
    assert f"'{lead}b.png" in names and "a.png" in names
    assert sorted(i["name"] for i in json.loads(out_json.read_text())["images"]) == sorted(["a.png", f"{lead}b.png"])
    for r in rows:
        float(r["score"])  # numbers stay numbers


def test_csv_quotes_text_cells_not_numbers(tmp_path):
    rows = [Row("=HYPERLINK(x)", -0.5, "@w.pth"), Row("\tname", 0.25, "+w"), Row("plain.png", 1e-20, "kadid")]
    Report("TOPIQ-FR", "kadid", rows=rows).write_csv(check_outputs({"--csv": tmp_path / "s.csv"}, [])["--csv"])
    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    assert got == [
        ["name", "score", "weights"],
        ["'=HYPERLINK(x)", "-0.5", "'@w.pth"],
        ["'\tname", "0.25", "'+w"],
        ["plain.png", "1e-20", "kadid"],
    ]


def test_a_file_that_cannot_be_written_costs_neither_the_other_nor_stdout(
    folders, tmp_path, weights_file, cached_losses, capsys, monkeypatch
):
    def full_disk(self, out):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Report, "write_csv", full_disk)
    dist, ref = folders
    out_csv, out_json = tmp_path / "s.csv", tmp_path / "s.json"
    args = ["score", str(dist), str(ref), "--weights", str(weights_file), "--csv", str(out_csv), "--json", str(out_json)]
    assert main([*args, "--format", "json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["count"] == 2 and json.loads(out_json.read_text())["count"] == 2
    assert "--csv" in err and "No space left on device" in err and not out_csv.exists()
