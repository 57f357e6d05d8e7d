"""Weights download, cache and loading against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import pytest
import torch
from weights_server import ServedFile, checkpoint_bytes, closed_port, entry_for, hash_named

import topiq_loss.weights.hub as hub
from topiq_loss import TOPIQLoss, WeightsEntry, WeightsError, download_weights, read_state_dict
from topiq_loss.weights.registry import WEIGHTS

pytestmark = pytest.mark.usefixtures("fresh_hub_state")


SMALL = checkpoint_bytes({"w": torch.arange(10.0)})


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_download_then_cache_hit(server, tmp_path):
    name = hash_named("small", SMALL)
    server.files[name] = ServedFile(SMALL)
    entry = entry_for(name, server.url(name))
    path = download_weights(entry, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / name and path.read_bytes() == SMALL
    assert server.hits(name) == 1
    hub._verified.clear()  # a new process re-hashes the cached file, without downloading
    assert download_weights(entry, cache_dir=tmp_path, progress=False) == path
    assert server.hits(name) == 1
    assert _leftovers(tmp_path) == [name]
    assert torch.equal(read_state_dict(path)["w"], torch.arange(10.0))


def test_wrong_hash_rejected_and_nothing_cached(server, tmp_path):
    name = "small-00000000.pth"
    server.files[name] = ServedFile(SMALL)
    with pytest.raises(WeightsError, match=r"sha256 [0-9a-f]{8}\.\.\. does not start with the published prefix 00000000"):
        download_weights(entry_for(name, server.url(name)), cache_dir=tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_first_url_down_second_used(server, tmp_path):
    name = hash_named("small", SMALL)
    server.files[name] = ServedFile(SMALL)
    server.files["down/" + name] = ServedFile(b"", status=503)
    entry = entry_for(name, server.url("down/" + name), server.url(name))
    path = download_weights(entry, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == SMALL
    assert server.requests == ["/down/" + name, "/" + name]


def test_truncated_download_leaves_nothing(server, tmp_path):
    name = hash_named("small", SMALL)
    server.files[name] = ServedFile(SMALL, truncate_at=100)
    with pytest.raises(WeightsError):
        download_weights(entry_for(name, server.url(name)), cache_dir=tmp_path, progress=False)
    assert _leftovers(tmp_path) == []
    server.files[name] = ServedFile(SMALL)
    assert download_weights(entry_for(name, server.url(name)), cache_dir=tmp_path, progress=False).read_bytes() == SMALL


def test_mirror_env_is_tried_first(server, tmp_path, monkeypatch):
    name = hash_named("small", SMALL)
    server.files["mirror/" + name] = ServedFile(SMALL)
    monkeypatch.setenv(hub.MIRROR_ENV, server.url("mirror"))
    dead = f"http://127.0.0.1:{closed_port()}/{name}"
    download_weights(entry_for(name, dead), cache_dir=tmp_path, progress=False)
    assert server.requests == ["/mirror/" + name]


def test_unreachable_gives_actionable_error(tmp_path):
    port = closed_port()
    name = hash_named("small", SMALL)
    urls = [f"http://127.0.0.1:{port}/a/{name}", f"http://127.0.0.1:{port}/b/{name}"]
    with pytest.raises(WeightsError) as info:
        download_weights(entry_for(name, *urls), cache_dir=tmp_path, progress=False)
    msg = str(info.value)
    for needle in (*urls, str(tmp_path / name), "weights=", hub.MIRROR_ENV):
        assert needle in msg
    assert _leftovers(tmp_path) == []


def test_official_entries_name_both_hosts_in_offline_error(tmp_path, monkeypatch):
    """With the official registry entry and no route to its hosts: the clear error."""
    port = closed_port()
    official = WEIGHTS["kadid"]
    local = WeightsEntry(
        name=official.name,
        filename=official.filename,
        sha256_prefix=official.sha256_prefix,
        urls=tuple(u.replace("https://", f"http://127.0.0.1:{port}/") for u in official.urls),
    )
    monkeypatch.setitem(WEIGHTS, "kadid", local)
    with pytest.raises(WeightsError, match=r"(?s)github\.com/chaofengc.*huggingface\.co/chaofengc.*cfanet_fr_kadid_res50-2c4cc61d\.pth"):
        TOPIQLoss(cache_dir=tmp_path, progress=False)
    assert official.sha256_prefix == "2c4cc61d" and WEIGHTS["pipal"].sha256_prefix == "69bbe5ba"


def test_topiq_loss_downloads_registry_weights_end_to_end(server, tmp_path, monkeypatch, seeded_checkpoint, net):
    name = hash_named("cfanet_fr_test_res50", seeded_checkpoint)
    server.files[name] = ServedFile(seeded_checkpoint)
    monkeypatch.setitem(WEIGHTS, "kadid", entry_for(name, server.url(name)))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    loss_fn = TOPIQLoss(progress=True)  # default weights, default cache dir (TORCH_HOME)
    assert (tmp_path / "torch_home" / "hub" / "checkpoints" / name).is_file()
    x = torch.rand(1, 3, 32, 32)
    y = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loss_fn.score(x, y), net(x, y))


def test_local_path_and_bare_state_dict(tmp_path, seeded_state, net):
    path = tmp_path / "any name.bin"
    torch.save(seeded_state, path)  # bare state dict, no 'params'
    loss_fn = TOPIQLoss(weights=str(path))
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loss_fn.score(x, y), net(x, y))
    loss_fn2 = TOPIQLoss(weights=path)  # PathLike
    assert loss_fn2.weights_name == str(path)


def test_missing_local_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="`weights` file not found"):
        TOPIQLoss(weights=str(tmp_path / "nope.pth"))


def test_mismatched_checkpoint_names_keys(tmp_path, seeded_state):
    state = dict(seeded_state)
    state.pop("h_emb")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"params": state}, path)
    with pytest.raises(WeightsError, match=r"bad\.pth is not a CFANet-FR.*1 missing keys \(h_emb\); 1 unexpected keys \(extra\.weight\)"):
        TOPIQLoss(weights=str(path))
