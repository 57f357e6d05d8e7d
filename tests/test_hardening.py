"""Hardening: digest pins, bounded downloads, cache errors, sane weights, input ranges, CLI decoding.

Each test fails without the fix it covers (see the closing note of the hardening issue).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import zipfile

import numpy as np
import pytest
import torch
from conftest import distort, smooth_images
from weights_server import ServedFile, checkpoint_bytes, entry_for, hash_named

import topiq_loss.weights.checkpoint as checkpoint
import topiq_loss.weights.hub as hub
from topiq_loss import REGISTRY, SRLoss, TOPIQLoss, WeightsError, pixel_loss
from topiq_loss.cli.app import main, read_image
from topiq_loss.weights.hub import PINS_ENV, download_weights, read_state_dict

pytestmark = pytest.mark.usefixtures("fresh_hub_state")

SMALL = checkpoint_bytes({"w": torch.arange(6.0).view(2, 3)})


def _served(server, data: bytes = SMALL, stem: str = "small", **kwargs):
    """A file in the (fake) release folder; the fake Hub does not have it."""
    name = hash_named(stem, data)
    server.files["rel/" + name] = ServedFile(data, **kwargs)
    return name, entry_for(name, server.url("rel"))


def _pins(tmp_path, monkeypatch, line: str):
    path = tmp_path / "pins.txt"
    path.write_text(line + "\n")
    monkeypatch.setenv(PINS_ENV, str(path))
    return path


# ------------------------------------------------------------------ 1. integrity
def test_pinned_digest_accepts_exactly_that_file(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    good = hashlib.sha256(SMALL).hexdigest()
    _pins(tmp_path, monkeypatch, f"{good}  {name}")
    assert download_weights(entry, cache_dir=tmp_path / "c", progress=False).read_bytes() == SMALL


def test_a_prefix_collision_is_refused_when_pinned(server, tmp_path, monkeypatch):
    """A file whose name prefix matches (simulated: an empty prefix accepts anything)
    but whose full digest is not the pinned one is never accepted or cached."""
    name, entry = _served(server)
    colliding = dataclasses.replace(entry, sha256_prefix="")
    _pins(tmp_path, monkeypatch, f"{'a' * 64}  {name}")
    with pytest.raises(WeightsError, match=r"differs from the one pinned in TOPIQ_LOSS_PINS file"):
        download_weights(colliding, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / name).exists()
    # The registry's own full digest works the same way.
    monkeypatch.delenv(PINS_ENV)
    with pytest.raises(WeightsError, match=r"pinned in the registry entry"):
        download_weights(dataclasses.replace(colliding, sha256="b" * 64), cache_dir=tmp_path / "c", progress=False)


def test_a_pin_outranks_the_digest_the_hub_announces(server, tmp_path, monkeypatch):
    name = hash_named("small", SMALL)
    server.on_hub(name, ServedFile(SMALL))  # the Hub announces the true digest
    _pins(tmp_path, monkeypatch, f"{'a' * 64}  {name}")
    with pytest.raises(WeightsError, match=r"differs from the one pinned"):
        download_weights(entry_for(name), cache_dir=tmp_path / "c", progress=False)


def test_cached_file_that_fails_its_pin_is_replaced(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / name).write_bytes(b"impostor")  # what a colliding file would be
    colliding = dataclasses.replace(entry, sha256_prefix="")
    _pins(tmp_path, monkeypatch, f"{hashlib.sha256(SMALL).hexdigest()}  {name}")
    with pytest.warns(RuntimeWarning, match="were refused"):
        path = download_weights(colliding, cache_dir=folder, progress=False)
    assert path.read_bytes() == SMALL


def test_malformed_pins_file_is_named(server, tmp_path, monkeypatch):
    _, entry = _served(server)
    _pins(tmp_path, monkeypatch, "not-a-digest  file.pth")
    with pytest.raises(WeightsError, match=r"pins\.txt, line 1: expected '<64 hex digits>  <file name>'"):
        download_weights(entry, cache_dir=tmp_path / "c", progress=False)
    assert server.requests == []


def test_a_plain_url_file_without_pin_says_so_in_the_log(server, tmp_path, caplog):
    _, entry = _served(server)
    with caplog.at_level(logging.WARNING, logger="topiq_loss"):
        download_weights(entry, cache_dir=tmp_path / "a", progress=False)
    assert "only the 8-hex prefix of its name was checked" in caplog.text and PINS_ENV in caplog.text


def test_weights_command_lists_fetches_and_verifies(server, tmp_path, monkeypatch, capsys):
    name, entry = _served(server)
    monkeypatch.setitem(REGISTRY, "kadid", dataclasses.replace(entry, name="kadid"))
    folder = str(tmp_path / "c")
    assert main(["weights", "list", "--cache-dir", folder]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:-1]]
    # Every entry on its own row, its name, kind and file apart (face_swin is longer than 0.5's column).
    assert [r[:3] for r in rows] == [[n, e.kind.upper(), e.filename] for n, e in REGISTRY.items()]
    assert main(["weights", "fetch", "kadid", "--cache-dir", folder]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line == f"{hashlib.sha256(SMALL).hexdigest()}  {name}"
    assert main(["weights", "verify", "kadid", "--cache-dir", folder]) == 0
    (tmp_path / "c" / name).write_bytes(b"tampered")
    assert main(["weights", "verify", str(tmp_path / "c" / name)]) == 2
    assert "refused" in capsys.readouterr().err


# ------------------------------------------------------------------ 2. downloads and the cache
def test_a_file_larger_than_expected_is_refused_and_not_cached(server, tmp_path):
    name, entry = _served(server, data=b"x" * 4096)
    with pytest.raises(WeightsError, match=r"4096 bytes, more than the 1000 expected at most"):
        download_weights(dataclasses.replace(entry, max_bytes=1000), cache_dir=tmp_path, progress=False)
    assert not (tmp_path / name).exists()


def test_a_planted_lock_link_is_not_written_through(server, tmp_path):
    name, entry = _served(server)
    (tmp_path / "elsewhere").write_text("precious")
    (tmp_path / (name + ".lock")).symlink_to(tmp_path / "elsewhere")
    try:
        download_weights(entry, cache_dir=tmp_path, progress=False)
    except WeightsError:
        pass  # refusing is fine too; writing through the link is not
    assert (tmp_path / "elsewhere").read_text() == "precious"


def test_torch_home_that_is_a_file(server, tmp_path, monkeypatch):
    _, entry = _served(server)
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsError, match=r"(?s)(File exists|Not a directory).*home.*weights='/path/to/"):
        download_weights(entry, progress=False)


def test_credentials_never_appear_in_messages_or_logs(server, tmp_path, monkeypatch, caplog):
    _, entry = _served(server)
    port = server.url().split(":")[2].split("/")[0]
    for base in (f"http://alice:s3cret@127.0.0.1:{port}/base?token=t0ken", f"http://127.0.0.1:{port}/base?token=t0ken"):
        monkeypatch.setenv(hub.MIRROR_ENV, base)
        with caplog.at_level(logging.DEBUG, logger="topiq_loss"), pytest.raises(WeightsError) as info:
            download_weights(dataclasses.replace(entry, release=f"http://127.0.0.1:{port}/none"), cache_dir=tmp_path,
                             progress=False)
        text = str(info.value) + caplog.text
        assert "s3cret" not in text and "t0ken" not in text and "alice" not in text
        assert "token=***" in text


# ------------------------------------------------------------------ 3. weights that cannot be right
def _save(tmp_path, tensors, name="w.pth"):
    path = tmp_path / name
    torch.save({"params": tensors}, path)
    return path


@pytest.mark.parametrize(
    "value",
    [
        torch.ones(2, 2, dtype=torch.int32),
        torch.ones(2, 2, dtype=torch.bool),
        torch.ones(2, 2, dtype=torch.complex64),
        torch.tensor([1.0, float("nan")]),
        torch.tensor([1.0, float("inf")]),
        torch.empty(2, 2, device="meta"),
        torch.eye(3).to_sparse(),
        torch.quantize_per_tensor(torch.ones(2, 2), 0.1, 0, torch.qint8),
    ],
    ids=["int", "bool", "complex", "nan", "inf", "meta", "sparse", "quantized"],
)
def test_impossible_tensors_are_refused_naming_the_key(tmp_path, value):
    path = _save(tmp_path, {"good": torch.ones(2), "semantic_model.conv1.weight": value})
    with pytest.raises(WeightsError) as info:
        read_state_dict(path)
    assert "tensor 'semantic_model.conv1.weight'" in str(info.value)
    assert "cannot be a trained CFANet" in str(info.value)


def test_num_batches_tracked_may_be_an_integer(tmp_path):
    path = _save(tmp_path, {"bn.num_batches_tracked": torch.tensor(0), "bn.weight": torch.ones(3)})
    assert set(read_state_dict(path)) == {"bn.num_batches_tracked", "bn.weight"}


def test_oversized_records_are_refused_before_loading(tmp_path, monkeypatch):
    """A small compressed archive whose records would expand past the limit never reaches torch.load."""
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data/0", b"\0" * (8 << 20))
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(checkpoint, "MAX_CHECKPOINT_BYTES", 4 << 20)

    def never(*args, **kwargs):
        raise AssertionError("torch.load must not run")

    monkeypatch.setattr(checkpoint.torch, "load", never)
    with pytest.raises(WeightsError, match=r"would expand to 8388608 bytes .* refused before loading"):
        read_state_dict(path)


# ------------------------------------------------------------------ 4. inputs
def test_far_out_of_range_inputs_warn_once_per_loss(seeded_state):
    from topiq_loss import CFANetFR

    net = CFANetFR()
    net.load_state_dict(seeded_state)
    loss_fn = TOPIQLoss(net=net)
    target = smooth_images(1, 40, 40, seed=1)
    with pytest.warns(UserWarning, match=r"far outside input_range=\(0.0, 1.0\): images in 0\.\.255\? divide them by 255"):
        loss_fn(target * 255, target * 255)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(target * 255, target * 255)  # once per loss
        loss_fn((target * 1.2 - 0.1), target)  # a small overshoot is fine
    other = TOPIQLoss(net=CFANetFR().requires_grad_(False))
    with pytest.warns(UserWarning, match=r"images in \[-1, 1\]\? pass input_range=\(-1, 1\)"):
        other.score(target * 2 - 1, target * 2 - 1)


def test_finite_input_with_non_finite_score_is_refused(loss_fn):
    import warnings

    huge = torch.full((1, 3, 32, 32), 1e38)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # far out of range too (warned once per loss)
        with pytest.raises(ValueError, match=r"`pred` and `target` gave a non-finite TOPIQ score"):
            loss_fn(huge, huge * 0.5)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda net: TOPIQLoss(net=net, input_range=(0.0, float("inf"))), ValueError, "`input_range` must be"),
        (lambda net: TOPIQLoss(net=net, loss_weight=float("inf")), ValueError, "`loss_weight` must be finite"),
        (lambda net: TOPIQLoss(net=net).set_grad_checkpointing("yes"), TypeError, "`enable` must be True or False"),
        (lambda net: TOPIQLoss(net=net).set_backbone_autocast(1), TypeError, "`enable` must be True or False"),
        (lambda net: SRLoss(2, topiq=TOPIQLoss(net=net), shave="no"), TypeError, "`shave` must be True or False"),
        (lambda net: SRLoss(2, topiq=TOPIQLoss(net=net), pixel_weight=float("nan")), ValueError, "`pixel_weight` must be a finite"),
        (lambda net: SRLoss(2, topiq=TOPIQLoss(net=net), topiq_weight=float("inf")), ValueError, "`topiq_weight` must be a finite"),
    ],
)
def test_options_are_checked(net, make, error, pattern):
    with pytest.raises(error, match=pattern):
        make(net)


def test_adversarial_weight_must_be_finite(loss_fn):
    from topiq_loss import GeneratorLoss

    with pytest.raises(ValueError, match="`adversarial_weight` must be a finite"):
        GeneratorLoss(topiq=loss_fn, adversarial_weight=float("inf"))


def test_pixel_loss_refuses_broadcasting():
    with pytest.raises(ValueError, match=r"same shape; got \(2, 3, 8, 8\) and \(1, 3, 8, 8\)"):
        pixel_loss(torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8))


# ------------------------------------------------------------------ 5. the command line
def test_16_bit_png_and_float_tiff_decode_by_depth(tmp_path):
    from PIL import Image

    grey16 = np.full((40, 48), 32768, dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    x = read_image(tmp_path / "g16.png")
    assert x.shape == (1, 3, 40, 48) and abs(x.mean().item() - 32768 / 65535) < 1e-6
    Image.fromarray(np.full((40, 48), 0.25, dtype=np.float32), mode="F").save(tmp_path / "f.tiff")
    y = read_image(tmp_path / "f.tiff")
    assert abs(y.mean().item() - 0.25) < 1e-7


def test_unreadable_and_bomb_images_exit_2_without_traceback(tmp_path, monkeypatch, capsys):
    from PIL import Image

    (tmp_path / "t.png").write_text("not an image")
    assert main(["score", str(tmp_path / "t.png")]) == 2
    assert "not an image file" in capsys.readouterr().err
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert main(["score", str(tmp_path / "big.png")]) == 2
    err = capsys.readouterr().err
    assert "decompression bomb" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [["map", "a.png", "-o", "m.png", "--panel", "100000"], ["map", "a.png", "-o", "m.png", "--panel", "0"],
     ["demo", "--size", "600"], ["demo", "--size", "0"]],
)
def test_out_of_bounds_sizes_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "must be an integer in" in capsys.readouterr().err


def test_read_image_keeps_8_bit_behaviour(tmp_path):
    from PIL import Image

    arr = (np.arange(40 * 48 * 3) % 256).astype(np.uint8).reshape(40, 48, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    x = read_image(io.BytesIO(buf.getvalue()))
    assert torch.allclose(x[0].permute(1, 2, 0), torch.from_numpy(arr).float() / 255)


def test_a_seeded_loss_still_scores_in_range_images_silently(loss_fn):
    import warnings

    target = smooth_images(1, 40, 40, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn(distort(target, 4), target)
    assert os.environ.get(PINS_ENV) is None
