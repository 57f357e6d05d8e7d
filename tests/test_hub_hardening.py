"""Hub hardening, round 3: pins for paths, registry metadata for paths, pins files read
up front, mirror URLs built properly, one spelling of random weights. Each test failed on
the code before its fix (the records and lock-file tests went with issue #35's transfer
layer: the Hub's announced digest replaced the records, filelock the hand-made lock)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from weights_server import ServedFile, checkpoint_bytes, entry_for, hash_named

import topiq_loss.weights.hub as hub
from topiq_loss import REGISTRY, CFANetNR, TOPIQLoss, TOPIQNRLoss, WeightsError, download_weights
from topiq_loss.cli.app import main
from topiq_loss.weights.hub import PINS_ENV, resolve_weights, verify

pytestmark = pytest.mark.usefixtures("fresh_hub_state")

SMALL = checkpoint_bytes({"w": torch.arange(4.0)})
DIGEST = hashlib.sha256(SMALL).hexdigest()


def _served(server, data: bytes = SMALL):
    name = hash_named("small", data)
    server.files["rel/" + name] = ServedFile(data)
    return name, entry_for(name, server.url("rel"))


def _pins_file(tmp_path, monkeypatch, content: bytes):
    path = tmp_path / "pins.txt"
    path.write_bytes(content)
    monkeypatch.setenv(PINS_ENV, str(path))
    return path


# ------------------------------------------------------------------ item 2: pins for paths
def test_a_path_named_like_a_registry_file_is_held_to_its_pin(tmp_path, monkeypatch, capsys):
    official = REGISTRY["kadid"].filename
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


def test_a_registry_named_path_is_held_to_its_prefix(tmp_path, monkeypatch):
    name = hash_named("cfanet_fr_test_res50", SMALL)
    monkeypatch.setitem(REGISTRY, "kadid", dataclasses.replace(entry_for(name), name="kadid"))
    path = tmp_path / name
    path.write_bytes(SMALL)
    state, _, entry = resolve_weights(str(path))  # name and prefix: accepted
    assert entry is REGISTRY["kadid"] and torch.equal(state["w"], torch.arange(4.0))
    renamed = tmp_path / f"cfanet_fr_test_res50-{'0' * 8}.pth"
    monkeypatch.setitem(REGISTRY, "kadid", dataclasses.replace(entry_for(renamed.name), name="kadid"))
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
    flive = dataclasses.replace(REGISTRY["flive"], filename=name, sha256_prefix=name.rsplit("-", 1)[1][:8])
    monkeypatch.setitem(REGISTRY, "flive", flive)
    return name, flive


def test_a_path_named_like_an_nr_file_resolves_to_its_entry_in_its_registry_only(tmp_path, monkeypatch):
    name, flive = _as_flive(monkeypatch, SMALL)
    (tmp_path / name).write_bytes(SMALL)
    nr = {n: e for n, e in REGISTRY.items() if e.kind != "fr"}
    assert resolve_weights(str(tmp_path / name), registry=nr)[2] is flive
    # The FR registry does not claim an NR file (the layout check then names it).
    fr = {n: e for n, e in REGISTRY.items() if e.kind == "fr"}
    assert resolve_weights(str(tmp_path / name), registry=fr)[2] is None


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
        (b"\xff\xfe\x00garbage\n", r"pins\.txt cannot be read as UTF-8 text"),
        (("a" * 64 + "  x.pth\n" + "b" * 64 + "  x.pth\n").encode(), r"pins\.txt, line 2: x\.pth is pinned to a second digest"),
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
    with pytest.raises(WeightsError, match=rf"{PINS_ENV} file {tmp_path} cannot be read"):
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
    download_weights(entry_for(name), cache_dir=tmp_path, progress=False)
    assert server.requests == ["/mirror/" + name]


def test_credentials_in_the_mirror_are_refused_with_a_sentence(server, tmp_path, monkeypatch):
    name, entry = _served(server)
    monkeypatch.setenv(hub.MIRROR_ENV, f"http://alice:s3cret@{server.url()[len('http://'):]}")
    with pytest.raises(WeightsError, match=rf"{hub.MIRROR_ENV} .* holds a user name or password") as info:
        download_weights(entry, cache_dir=tmp_path, progress=False)
    assert "s3cret" not in str(info.value) and "alice" not in str(info.value)
    assert server.requests == []


# ------------------------------------------------------------------ item 12: one spelling of random weights
def test_random_weights_are_spelt_random_in_python_too():
    assert resolve_weights("random")[0] is None and resolve_weights(None)[0] is None
    with pytest.warns(UserWarning, match="RANDOM weights"):
        loss = TOPIQLoss(weights="random")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert loss.score(x, x).shape == (1,)
