"""Hub hardening, round 3: pins for paths, registry metadata for paths, pins files read
up front, mirror URLs built properly, unpredictable temporary files, no stale lock files,
one spelling of random weights. Each test failed on the code before its fix."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys

import pytest
import torch
from weights_server import ServedFile, checkpoint_bytes, closed_port, entry_for, hash_named

import topiq_loss.weights.hub as hub
import topiq_loss.weights.integrity as integrity
from topiq_loss import CFANetNR, TOPIQLoss, TOPIQNRLoss, WeightsError, download_weights
from topiq_loss.cli.app import main
from topiq_loss.weights.hub import resolve_weights
from topiq_loss.weights.integrity import PINS_ENV, record_path, verify
from topiq_loss.weights.registry import NR_WEIGHTS, WEIGHTS

pytestmark = pytest.mark.usefixtures("fresh_hub_state")

SMALL = checkpoint_bytes({"w": torch.arange(4.0)})
DIGEST = hashlib.sha256(SMALL).hexdigest()


def _served(server, data: bytes = SMALL):
    name = hash_named("small", data)
    server.files[name] = ServedFile(data)
    return name, entry_for(name, server.url(name))


def _pins_file(tmp_path, monkeypatch, content: bytes):
    path = tmp_path / "pins.txt"
    path.write_bytes(content)
    monkeypatch.setenv(PINS_ENV, str(path))
    return path


# ------------------------------------------------------------------ item 2: pins for paths
def test_a_path_named_like_a_registry_file_is_held_to_its_pin(tmp_path, monkeypatch, capsys):
    official = WEIGHTS["kadid"].filename
    path = tmp_path / "p" / official
    path.parent.mkdir()
    path.write_bytes(SMALL)
    _pins_file(tmp_path, monkeypatch, f"{'a' * 64}  {official}\n".encode())
    with pytest.raises(WeightsError, match=rf"{official}.*differs from the one pinned in TOPIQ_LOSS_PINS"):
        TOPIQLoss(weights=str(path))
    with pytest.raises(WeightsError, match="pinned"):
        TOPIQLoss(weights=path)  # PathLike too
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    assert main(["score", str(img), str(img), "--weights", str(path)]) == 2
    assert "pinned" in capsys.readouterr().err


def test_a_registry_named_path_is_held_to_its_record_and_prefix(tmp_path, monkeypatch):
    name = hash_named("cfanet_fr_test_res50", SMALL)
    monkeypatch.setitem(WEIGHTS, "kadid", dataclasses.replace(entry_for(name), name="kadid"))
    path = tmp_path / name
    path.write_bytes(SMALL)
    state, _, entry = resolve_weights(str(path))  # name, prefix and no record: accepted
    assert entry is WEIGHTS["kadid"] and torch.equal(state["w"], torch.arange(4.0))
    record_path(path).write_text(f"{'b' * 64}  {name}\n")
    hub._verified.clear()
    with pytest.raises(WeightsError, match=r"differs from the digest recorded"):
        resolve_weights(str(path))
    record_path(path).unlink()
    renamed = tmp_path / f"cfanet_fr_test_res50-{'0' * 8}.pth"
    monkeypatch.setitem(WEIGHTS, "kadid", dataclasses.replace(entry_for(renamed.name), name="kadid"))
    renamed.write_bytes(SMALL)
    with pytest.raises(WeightsError, match=r"does not start with the published prefix 00000000.*rename"):
        resolve_weights(str(renamed))


def test_verify_is_public_and_returns_the_digest(tmp_path, monkeypatch):
    name = hash_named("small", SMALL)
    path = tmp_path / name
    path.write_bytes(SMALL)
    assert verify(path, entry_for(name)) == DIGEST
    _pins_file(tmp_path, monkeypatch, f"{'c' * 64}  {name}\n".encode())
    with pytest.raises(WeightsError, match=rf"{name}.*pinned"):
        verify(path, entry_for(name))


# ------------------------------------------------------------------ item 7: registry metadata for paths
def _as_flive(monkeypatch, data: bytes):
    name = hash_named("cfanet_nr_flive_test_res50", data)
    flive = dataclasses.replace(NR_WEIGHTS["flive"], filename=name, sha256_prefix=name.rsplit("-", 1)[1][:8])
    monkeypatch.setitem(NR_WEIGHTS, "flive", flive)
    return name, flive


def test_a_path_named_like_an_nr_file_resolves_to_its_entry_in_its_registry_only(tmp_path, monkeypatch):
    name, flive = _as_flive(monkeypatch, SMALL)
    (tmp_path / name).write_bytes(SMALL)
    assert resolve_weights(str(tmp_path / name), registry=NR_WEIGHTS)[2] is flive
    # The FR registry does not claim an NR file (the layout check then names it).
    assert resolve_weights(str(tmp_path / name))[2] is None


def test_a_flive_file_loaded_by_path_gets_the_flive_resize(tmp_path, monkeypatch):
    data = checkpoint_bytes(CFANetNR().state_dict())
    name, flive = _as_flive(monkeypatch, data)
    (tmp_path / name).write_bytes(data)
    loss = TOPIQNRLoss(weights=str(tmp_path / name))
    assert loss.resize == 384 and loss.score_range == flive.score_range


# ------------------------------------------------------------------ item 8: the pins file
@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"\xff\xfe\x00garbage\n", r"pins\.txt, line 1: not UTF-8 text"),
        (("a" * 64 + "  x.pth\n" + "b" * 64 + "  x.pth\n").encode(), r"pins\.txt, line 2: x\.pth is pinned to .* line 1"),
        (b"not a digest\n", r"pins\.txt, line 1: expected"),
    ],
    ids=["non-utf8", "conflicting-duplicate", "malformed"],
)
def test_a_bad_pins_file_is_named_before_any_download(server, tmp_path, monkeypatch, content, pattern):
    _, entry = _served(server)
    _pins_file(tmp_path, monkeypatch, content)
    with pytest.raises(WeightsError, match=pattern):
        download_weights(entry, cache_dir=tmp_path / "c", progress=False)
    assert server.requests == []


def test_a_folder_as_pins_file_is_named_before_any_download(server, tmp_path, monkeypatch):
    _, entry = _served(server)
    monkeypatch.setenv(PINS_ENV, str(tmp_path))
    with pytest.raises(WeightsError, match=rf"{PINS_ENV} file {tmp_path} is a folder"):
        download_weights(entry, cache_dir=tmp_path / "c", progress=False)
    assert server.requests == []


def test_a_pins_file_with_bom_and_repeated_lines_is_accepted(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    line = f"{DIGEST}  {name}\n"
    _pins_file(tmp_path, monkeypatch, ("\ufeff" + line + line).encode())
    assert download_weights(entry, cache_dir=tmp_path / "c", progress=False).read_bytes() == SMALL


# ------------------------------------------------------------------ item 9: mirror URLs
def test_a_mirror_with_a_query_string_gets_the_file_name_in_its_path(server, tmp_path, monkeypatch):
    name = hash_named("small", SMALL)
    server.files["mirror/" + name] = ServedFile(SMALL)
    monkeypatch.setenv(hub.MIRROR_ENV, server.url("mirror/") + "?token=t0ken")
    dead = f"http://127.0.0.1:{closed_port()}/{name}"
    download_weights(entry_for(name, dead), cache_dir=tmp_path, progress=False)
    assert server.requests == ["/mirror/" + name]


def test_credentials_in_the_mirror_are_refused_with_a_sentence(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    monkeypatch.setenv(hub.MIRROR_ENV, f"http://alice:s3cret@{server.url()[len('http://'):]}")
    with pytest.raises(WeightsError, match=rf"{hub.MIRROR_ENV} .* holds a user name or password") as info:
        download_weights(entry, cache_dir=tmp_path, progress=False)
    assert "s3cret" not in str(info.value) and "alice" not in str(info.value)
    assert server.requests == []


# ------------------------------------------------------------------ item 10: temporary files
def test_a_planted_symlink_at_the_record_tmp_name_is_not_followed(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    monkeypatch.setattr(hub, "_is_official", lambda url, e: url in e.urls)
    folder = tmp_path / "c"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (folder / f"{name}.sha256.tmp").symlink_to(victim)
    path = download_weights(entry, cache_dir=folder, progress=False)
    assert victim.read_text() == "precious"
    assert not record_path(path).is_symlink()
    assert record_path(path).read_text() == f"{DIGEST}  {name}\n"
    assert integrity.read_record(path) == DIGEST


# ------------------------------------------------------------------ item 16: lock files
def test_no_lock_file_is_left_after_a_download_ends(server, tmp_path):
    name, entry = _served(server)
    download_weights(entry, cache_dir=tmp_path / "ok", progress=False)
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == [name]
    server.files[name] = ServedFile(b"", status=404)
    with pytest.raises(WeightsError):
        download_weights(entry, cache_dir=tmp_path / "failed", progress=False)
    assert list((tmp_path / "failed").iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="flock-based lock (POSIX)")
def test_a_waiter_on_a_removed_lock_file_locks_the_new_one(tmp_path, monkeypatch):
    """The race that removing lock files opens: a waiter opened the file, the holder
    removed it and let go, the waiter's flock succeeds on the removed file. It must
    notice and lock the file now at the path."""
    import fcntl

    import topiq_loss.weights.download as download

    path = tmp_path / "f.pth.lock"
    real_flock, calls = fcntl.flock, []

    def flock_after_removal(fd, op):
        if not calls:
            path.unlink()  # the previous holder's release, between our open and our flock
        calls.append(fd)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_removal)
    fd = download._try_lock(path)
    assert fd is not None and len(calls) == 2
    assert os.path.samestat(os.fstat(fd), os.stat(path))
    os.close(fd)


# ------------------------------------------------------------------ item 12: one spelling of random weights
def test_random_weights_are_spelt_random_in_python_too():
    assert resolve_weights("random")[0] is None and resolve_weights(None)[0] is None
    with pytest.warns(UserWarning, match="RANDOM weights"):
        loss = TOPIQLoss(weights="random")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert loss.score(x, x).shape == (1,)
