"""The console script: one pair or image, labelled output, errors, image decoding and writing."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
from conftest import distort, smooth_images
from PIL import Image

import topiq_loss.cli.scorer as cli_scorer
from topiq_loss.cli.app import main, read_image, to_pil


def _write_png(path, img):
    to_pil(img).save(path)


#: Networks built by the commands under :func:`patch_losses`, shared by the CLI test modules.
_BUILT: dict = {}


def patch_losses(monkeypatch, net, weights_file) -> None:
    """Make the commands' network factory reuse networks: the session's seeded ``net`` for
    ``weights_file`` (it holds exactly those weights), any other choice built once per session
    (CFANet builds take seconds on CI's two cores; the tests only read them)."""
    from topiq_loss import TOPIQLoss

    real = cli_scorer.new_loss

    def new_loss(reference, weights, cache_dir):
        if reference and weights == str(weights_file):
            return TOPIQLoss(net=net)
        if (reference, weights) not in _BUILT:
            _BUILT[reference, weights] = real(reference, weights, cache_dir)
        return _BUILT[reference, weights]

    monkeypatch.setattr(cli_scorer, "new_loss", new_loss)


@pytest.fixture()
def cached_losses(monkeypatch, net, weights_file):
    patch_losses(monkeypatch, net, weights_file)


@pytest.fixture()
def pair(tmp_path):
    ref = smooth_images(1, 40, 56, seed=21)
    _write_png(tmp_path / "d.png", distort(ref, 22))
    _write_png(tmp_path / "r.png", ref)
    return str(tmp_path / "d.png"), str(tmp_path / "r.png")


def test_score_prints_the_model_score(pair, weights_file, capsys, loss_fn):
    # The real loading path once: a checkpoint file given by --weights.
    assert main(["score", *pair, "--weights", str(weights_file), "--format", "plain"]) == 0
    printed = float(capsys.readouterr().out.strip())
    d, r = read_image(pair[0]), read_image(pair[1])
    assert d.shape == (1, 3, 40, 56) and d.dtype == torch.float32
    with torch.no_grad():
        want = loss_fn.score(d, r).item()
    assert printed == pytest.approx(want, abs=1e-6)


def test_output_says_what_the_score_is(pair, weights_file, cached_losses, capsys):
    args = ["score", *pair, "--weights", str(weights_file)]
    assert main(args) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("TOPIQ-FR (seeded_untrained.pth) ") and text.endswith(", higher is better")
    value = float(text.split()[2].rstrip(","))
    assert main([*args, "--quiet"]) == 0  # --quiet: the bare number, as before
    plain = float(capsys.readouterr().out)
    assert main([*args, "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["metric"] == "TOPIQ-FR" and got["random_weights"] is False and got["higher_is_better"]
    assert got["images"] == [{"name": "d.png", "score": pytest.approx(plain, abs=1e-6), "weights": "seeded_untrained.pth"}]
    assert value == pytest.approx(plain, abs=1e-4)


def test_random_weights_are_marked_meaningless(pair, cached_losses, capsys):
    assert main(["score", pair[0], "--weights", "random"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("TOPIQ-NR (random weights, meaningless) ")
    assert "RANDOM weights" in err and "Traceback" not in err
    assert main(["score", pair[0], "--weights", "random", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["random_weights"] is True


def test_offline_error_suggests_the_cli_flag(pair, tmp_path, fresh_hub_state, capsys):
    # The suite runs offline (HF_HUB_OFFLINE=1, tests/conftest.py): the error a user without a network reads.
    assert main(["score", *pair, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "--weights /path/to/" in err and "weights='" not in err


def test_score_size_mismatch_is_an_error(tmp_path, capsys):
    _write_png(tmp_path / "a.png", smooth_images(1, 40, 40, 1))
    _write_png(tmp_path / "b.png", smooth_images(1, 48, 40, 1))
    # Refused before any network is built (no weights are needed to fail).
    assert main(["score", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--weights", "nonexistent.pth"]) == 2
    err = capsys.readouterr().err
    assert "same size" in err and "a.png" in err and "b.png" in err


def test_score_missing_file(tmp_path, capsys):
    assert main(["score", str(tmp_path / "x.png"), str(tmp_path / "y.png")]) == 2
    assert "x.png" in capsys.readouterr().err


def test_demo_runs_with_given_weights(weights_file, capsys):
    pytest.importorskip("skimage", reason="the demo needs scikit-image (the [examples] extra)")
    assert main(["demo", "--weights", str(weights_file), "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 11 and "JPEG, quality 5" in out and "higher score is better" in out


# ------------------------------------------------------------------ image files
def _exif_png(path, arr, orientation):
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, exif=exif)


@pytest.mark.parametrize(("orientation", "turn"), [(3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)),
                                                   (8, lambda a: np.rot90(a, 1)), (2, lambda a: a[:, ::-1])])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    arr = np.random.default_rng(orientation).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    _exif_png(tmp_path / "o.png", arr, orientation)
    got = read_image(tmp_path / "o.png")[0].permute(1, 2, 0).numpy()
    want = np.ascontiguousarray(turn(arr)).astype(np.float32) / 255
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-6


def _two_frames(path, fmt):
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])


@pytest.mark.parametrize(("name", "fmt"), [("a.gif", "GIF"), ("a.png", "PNG"), ("a.tiff", "TIFF")])
def test_animated_and_multi_page_images_are_refused(tmp_path, name, fmt, capsys):
    _two_frames(tmp_path / name, fmt)
    with pytest.raises(ValueError, match="2 frames"):
        read_image(tmp_path / name)
    assert main(["score", str(tmp_path / name), "--weights", "random"]) == 2
    err = capsys.readouterr().err
    assert "2 frames" in err and name in err and "Traceback" not in err


def _tiff_sample_format(data: bytes, value: int) -> bytes:
    """The TIFF ``data`` with its SampleFormat tag (339) set to ``value`` (PIL always writes 2)."""
    buf = bytearray(data)
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, kind = struct.unpack(end + "HH", data[at : at + 4])
        if tag == 339:
            assert kind == 3  # SHORT, stored in the entry itself
            buf[at + 8 : at + 10] = struct.pack(end + "H", value)
            return bytes(buf)
    raise AssertionError("no SampleFormat tag")


def test_32_bit_integer_tiffs_decode_by_their_real_range(tmp_path):
    signed = np.array([[0, 2**30], [2**31 - 1, 7]], dtype=np.int32)
    Image.fromarray(signed).save(tmp_path / "s.tiff")
    got = read_image(tmp_path / "s.tiff")[0, 0].double()
    assert torch.allclose(got, torch.from_numpy(signed / (2**31 - 1)), atol=1e-7)
    buf = io.BytesIO()
    # Unsigned 2**32 - 1 and 2**31 are stored as the int32 bits -1 and -2**31.
    Image.fromarray(np.array([[-1, -(2**31)], [0, 1]], dtype=np.int32)).save(buf, format="TIFF")
    (tmp_path / "u.tiff").write_bytes(_tiff_sample_format(buf.getvalue(), 1))
    got = read_image(tmp_path / "u.tiff")[0, 0].double()
    assert torch.allclose(got, torch.tensor([[1.0, 2**31 / (2**32 - 1)], [0.0, 1 / (2**32 - 1)]], dtype=torch.float64))
    Image.fromarray(np.array([[-5, 0]], dtype=np.int32)).save(tmp_path / "n.tiff")
    with pytest.raises(ValueError, match="n.tiff.*outside 0..2147483647"):
        read_image(tmp_path / "n.tiff")


def test_map_writes_jpeg_for_a_jpeg_name_and_never_overwrites_an_input(pair, weights_file, cached_losses, capsys):
    out = pair[0].replace("d.png", "map.JPG")
    assert main(["map", *pair, "-o", out, "--weights", str(weights_file), "--panel", "32"]) == 0
    with Image.open(out) as im:
        assert im.format == "JPEG"
    assert "maps -> " in capsys.readouterr().out
    before = open(pair[0], "rb").read()
    for target in pair:
        assert main(["map", *pair, "-o", target, "--weights", str(weights_file)]) == 2
        assert "refusing to overwrite" in capsys.readouterr().err
    assert open(pair[0], "rb").read() == before
    assert main(["map", *pair, "-o", pair[0] + ".xyz"]) == 2
    assert "image extension" in capsys.readouterr().err
