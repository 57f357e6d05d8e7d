"""Hardening: digest pins, bounded downloads, cache errors, sane weights, input ranges, CLI decoding.

Each test fails without the fix it covers (see the closing note of the hardening issue).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from conftest import distort, smooth_images
from weights_server import ServedFile, checkpoint_bytes, entry_for, hash_named

import topiq_loss.weights.checkpoint as checkpoint
import topiq_loss.weights.download as download
import topiq_loss.weights.hub as hub
from topiq_loss import SRLoss, TOPIQLoss, WeightsError, pixel_loss
from topiq_loss.cli.app import main, read_image
from topiq_loss.weights.hub import download_weights, read_state_dict
from topiq_loss.weights.integrity import PINS_ENV, read_record, record_path

pytestmark = pytest.mark.usefixtures("fresh_hub_state")

SMALL = checkpoint_bytes({"w": torch.arange(6.0).view(2, 3)})


def _served(server, data: bytes = SMALL, stem: str = "small", **kwargs):
    name = hash_named(stem, data)
    server.files[name] = ServedFile(data, **kwargs)
    return name, entry_for(name, server.url(name))


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


def test_official_download_records_the_full_digest_and_later_loads_check_it(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    monkeypatch.setattr(hub, "_is_official", lambda url, e: url in e.urls)  # the test server stands in for HTTPS
    folder = tmp_path / "c"
    path = download_weights(entry, cache_dir=folder, progress=False)
    assert read_record(path) == hashlib.sha256(SMALL).hexdigest()
    assert record_path(path).read_text() == f"{hashlib.sha256(SMALL).hexdigest()}  {name}\n"
    # A later file with a matching prefix (empty here) but another digest is refused.
    path.write_bytes(b"impostor")
    hub._verified.clear()
    server.files[name] = ServedFile(b"impostor too")
    with pytest.warns(RuntimeWarning, match="differs from the digest recorded"), pytest.raises(WeightsError):
        download_weights(dataclasses.replace(entry, sha256_prefix=""), cache_dir=folder, progress=False)


def test_mirror_without_pin_warns_once(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    monkeypatch.setattr(hub, "_prefix_warned", set())
    with pytest.warns(RuntimeWarning, match=r"(?s)only the 32-bit sha256 prefix .* TOPIQ_LOSS_PINS"):
        download_weights(entry, cache_dir=tmp_path / "a", progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        download_weights(entry, cache_dir=tmp_path / "b", progress=False)


def test_weights_command_lists_fetches_and_verifies(server, tmp_path, monkeypatch, capsys):
    import topiq_loss.weights.registry as w

    name, entry = _served(server)
    monkeypatch.setitem(w.WEIGHTS, "kadid", dataclasses.replace(entry, name="kadid"))
    folder = str(tmp_path / "c")
    assert main(["weights", "list", "--cache-dir", folder]) == 0
    assert "koniq" in capsys.readouterr().out
    assert main(["weights", "fetch", "kadid", "--cache-dir", folder]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line == f"{hashlib.sha256(SMALL).hexdigest()}  {name}"
    assert main(["weights", "verify", "kadid", "--cache-dir", folder]) == 0
    (tmp_path / "c" / name).write_bytes(b"tampered")
    assert main(["weights", "verify", str(tmp_path / "c" / name)]) == 2
    assert "refused" in capsys.readouterr().err


# ------------------------------------------------------------------ 2. downloads and the cache
def test_endless_stream_without_length_is_capped(server, tmp_path):
    name, entry = _served(server, data=b"x" * (1 << 16), send_length=False, repeat=10_000)
    with pytest.raises(WeightsError, match=r"more than the 1048576 bytes expected at most"):
        download_weights(dataclasses.replace(entry, max_bytes=1 << 20), cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # no partial file, no lock file


def test_announced_oversize_is_refused_before_reading(server, tmp_path):
    name, entry = _served(server, data=b"x" * 4096, repeat=1000)
    with pytest.raises(WeightsError, match="server announces 4096000 bytes"):
        download_weights(dataclasses.replace(entry, max_bytes=10_000), cache_dir=tmp_path, progress=False)


def test_trickling_server_is_aborted(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_RATE_WINDOW_S", 0.3)
    monkeypatch.setattr(download, "_MIN_RATE", 10 * 2**20)  # 10 MiB/s; the server sends ~0.6 MiB/s
    _, entry = _served(server, data=b"y" * (1 << 16), repeat=40, chunk_delay=0.1)
    with pytest.raises(WeightsError, match="transfer too slow"):
        download_weights(entry, cache_dir=tmp_path, progress=False)


def test_lock_wait_names_the_holder_and_ends(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    lock = tmp_path / (name + ".lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time, filelock, pathlib
            lock = filelock.FileLock({str(lock)!r}); lock.acquire()
            pathlib.Path({str(lock)!r}).write_text("pid 4242 on testhost, downloading {name}")
            print("held", flush=True); time.sleep(30)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(download, "_LOCK_POLL_S", 0.2)
        monkeypatch.setattr(download, "_LOCK_TIMEOUT_S", 0.5)
        with pytest.raises(WeightsError, match=rf"waiting for the lock file .*{name}\.lock, held by pid 4242 on testhost"):
            download_weights(entry, cache_dir=tmp_path, progress=False)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_odd_lock_files_are_refused(server, tmp_path, kind):
    name, entry = _served(server)
    lock = tmp_path / (name + ".lock")
    if kind == "directory":
        lock.mkdir()
    else:
        (tmp_path / "elsewhere").write_text("precious")
        lock.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(WeightsError, match="lock file .* remove it"):
        download_weights(entry, cache_dir=tmp_path, progress=False)
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_text() == "precious"


def test_torch_home_that_is_a_file(server, tmp_path, monkeypatch):
    _, entry = _served(server)
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsError, match=r"cannot create the weights cache folder .*home.*set TORCH_HOME"):
        download_weights(entry, progress=False)


def test_unwritable_cache_names_the_way_out(server, tmp_path, monkeypatch):
    # As root, chmod does not stop writes: simulate what os.access reports for a read-only folder.
    _, entry = _served(server)
    monkeypatch.setattr(hub.os, "access", lambda path, mode: False)
    with pytest.raises(WeightsError, match=r"is not writable: set TORCH_HOME .* cache_dir=.*weights="):
        download_weights(entry, cache_dir=tmp_path, progress=False)


def test_credentials_never_appear_in_messages_or_logs(server, tmp_path, monkeypatch, caplog):
    name, entry = _served(server)
    server.files[name] = ServedFile(SMALL, status=404)
    port = server.url().split(":")[2].split("/")[0]
    monkeypatch.setenv(hub.MIRROR_ENV, f"http://alice:s3cret@127.0.0.1:{port}/base?token=t0ken")
    with caplog.at_level(logging.DEBUG, logger="topiq_loss"), pytest.raises(WeightsError) as info:
        download_weights(dataclasses.replace(entry, urls=()), cache_dir=tmp_path, progress=False)
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
