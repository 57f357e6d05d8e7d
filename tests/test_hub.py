"""Where weights come from, against a fake Hub and plain URLs on 127.0.0.1: the caches a
user has, huggingface_hub for the Hub (its digest checked), torch.hub for the mirror and
the release, and the offline error."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest
import torch
from weights_server import HUB_PATH, ServedFile, checkpoint_bytes, closed_port, entry_for, hash_named

import topiq_loss.weights.hub as hub
from topiq_loss import REGISTRY, TOPIQLoss, WeightsError, download_weights, read_state_dict

pytestmark = pytest.mark.usefixtures("fresh_hub_state")

SMALL = checkpoint_bytes({"w": torch.arange(10.0)})
DIGEST = hashlib.sha256(SMALL).hexdigest()
NAME = hash_named("cfanet_fr_test_res50", SMALL)


def _official(name: str = NAME):
    """The kadid entry, describing a test file: its sources follow from its name."""
    return dataclasses.replace(REGISTRY["kadid"], filename=name, sha256_prefix=name.rsplit("-", 1)[1][:8])


def _hub_cache() -> Path:
    import huggingface_hub.constants as hf

    return Path(hf.HF_HUB_CACHE)


def _blobs() -> list[str]:
    return sorted(p.name for p in _hub_cache().rglob("blobs/*"))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


# ------------------------------------------------------------------ the Hub
def test_an_official_file_comes_from_the_hub_checked_against_the_announced_digest(server):
    server.on_hub(NAME, ServedFile(SMALL))
    path = download_weights(_official(), progress=False)
    assert path.read_bytes() == SMALL and path.name == NAME
    assert Path(os.path.realpath(path)).name == DIGEST  # the blob the Hub announced
    assert server.requests == ["/" + HUB_PATH + NAME] * 2  # HEAD, GET
    hub._checked.clear()  # a new process: found in the Hub cache, checked, no request
    assert download_weights(_official(), progress=False) == path
    assert len(server.requests) == 2
    assert torch.equal(read_state_dict(path)["w"], torch.arange(10.0))


def test_a_file_unlike_the_announced_digest_is_refused_and_nothing_is_left(server):
    server.on_hub(NAME, ServedFile(SMALL, announced="f" * 64))
    with pytest.raises(WeightsError, match=rf"(?s){HUB_PATH}{NAME}.*differs from the digest the Hub announced.*{'f' * 64}"):
        download_weights(_official(), progress=False)
    assert _blobs() == [] and not list(_hub_cache().rglob(f"snapshots/*/{NAME}"))
    server.on_hub(NAME, ServedFile(SMALL))  # the next call trusts nothing the first one left
    assert download_weights(_official(), progress=False).read_bytes() == SMALL
    assert server.hits(HUB_PATH + NAME) == 4


def test_a_tampered_file_in_the_hub_cache_is_removed_and_fetched_again(server):
    server.on_hub(NAME, ServedFile(SMALL))
    path = download_weights(_official(), progress=False)
    blob = Path(os.path.realpath(path))
    blob.chmod(0o644)
    blob.write_bytes(SMALL[:-1] + bytes([SMALL[-1] ^ 1]))
    hub._checked.clear()
    with pytest.warns(RuntimeWarning, match=r"were refused .*; removed"):
        again = download_weights(_official(), progress=False)
    assert again.read_bytes() == SMALL and server.hits(HUB_PATH + NAME) == 4


def test_hf_hub_offline_fails_fast_with_no_request(server, monkeypatch):
    import huggingface_hub.constants as hf

    server.on_hub(NAME, ServedFile(SMALL))
    monkeypatch.setenv(hub.MIRROR_ENV, server.url("mirror"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        download_weights(_official(), progress=False)
    assert time.monotonic() - start < 2.0 and server.requests == []
    message = str(info.value)
    for needle in (
        NAME, f"{HUB_PATH}{NAME}", f"github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/{NAME}",
        str(hub.default_cache_dir() / NAME), str(hub.pyiqa_cache_dir()), hf.HF_HUB_CACHE,
        "weights='/path/to/", hub.MIRROR_ENV, "HF_ENDPOINT", "unset HF_HUB_OFFLINE",
    ):
        assert needle in message, needle


_CHILD = r"""
import dataclasses, json, sys
from topiq_loss import REGISTRY, WeightsError, download_weights
name = sys.argv[1]
entry = dataclasses.replace(REGISTRY["kadid"], filename=name, sha256_prefix=name.rsplit("-", 1)[1][:8])
try:
    print(json.dumps(["ok", str(download_weights(entry, progress=False))]))
except WeightsError as exc:
    print(json.dumps(["refused", str(exc)]))
"""


def test_the_hub_variables_themselves_in_a_fresh_interpreter(server, tmp_path):
    """HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE as a user sets them: before Python starts."""
    server.on_hub(NAME, ServedFile(SMALL))
    env = {**os.environ, "HF_ENDPOINT": server.url().rstrip("/"), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "0", "TORCH_HOME": str(tmp_path / "torch"), "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)

    def child(**extra: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", _CHILD, NAME], env={**env, **extra}, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    verdict, path = child()
    assert verdict == "ok" and Path(path).is_relative_to(tmp_path / "hf" / "hub") and server.hits(HUB_PATH + NAME) == 2
    verdict, message = child(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty"))
    assert verdict == "refused" and "HF_HUB_OFFLINE is set" in message and server.hits(HUB_PATH + NAME) == 2


# ------------------------------------------------------------------ caches a user has
def test_a_file_in_pyiqas_cache_is_used_with_no_request(server):
    hub.pyiqa_cache_dir().mkdir(parents=True)
    (hub.pyiqa_cache_dir() / NAME).write_bytes(SMALL)
    assert download_weights(_official(), progress=False) == hub.pyiqa_cache_dir() / NAME
    assert server.requests == []


def test_a_bad_file_in_pyiqas_cache_is_skipped_not_removed(server):
    server.on_hub(NAME, ServedFile(SMALL))
    hub.pyiqa_cache_dir().mkdir(parents=True)
    (hub.pyiqa_cache_dir() / NAME).write_bytes(b"not it")
    with pytest.warns(RuntimeWarning, match=r"does not start with the published prefix.*skipped"):
        path = download_weights(_official(), progress=False)
    assert path.read_bytes() == SMALL and (hub.pyiqa_cache_dir() / NAME).read_bytes() == b"not it"


# ------------------------------------------------------------------ plain URLs: mirror and release
def test_the_mirror_is_tried_first_and_its_file_cached(server, tmp_path, monkeypatch):
    server.on_hub(NAME, ServedFile(SMALL))
    server.files["mirror/" + NAME] = ServedFile(SMALL)
    monkeypatch.setenv(hub.MIRROR_ENV, server.url("mirror"))
    assert download_weights(_official(), cache_dir=tmp_path, progress=False) == tmp_path / NAME
    assert server.requests == ["/mirror/" + NAME] and _leftovers(tmp_path) == [NAME]


def test_the_release_is_used_when_the_hub_lacks_the_file(server, tmp_path):
    server.files["rel/" + NAME] = ServedFile(SMALL)
    path = download_weights(entry_for(NAME, server.url("rel")), cache_dir=tmp_path, progress=False)
    assert path == tmp_path / NAME and path.read_bytes() == SMALL
    assert server.requests == ["/" + HUB_PATH + NAME, "/rel/" + NAME]


def test_a_wrong_prefix_is_refused_and_nothing_is_cached(server, tmp_path):
    name = "small-00000000.pth"
    server.files["rel/" + name] = ServedFile(SMALL)
    with pytest.raises(WeightsError, match=r"sha256 [0-9a-f]{8}\.\.\. does not start with the published prefix 00000000"):
        download_weights(entry_for(name, server.url("rel")), cache_dir=tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_a_truncated_download_leaves_nothing_trusted(server, tmp_path):
    """torch.hub accepts a body cut short (urllib raises nothing); the digest check refuses it."""
    server.files["rel/" + NAME] = ServedFile(SMALL, truncate_at=100)
    with pytest.raises(WeightsError, match="does not start with the published prefix"):
        download_weights(entry_for(NAME, server.url("rel")), cache_dir=tmp_path, progress=False)
    assert _leftovers(tmp_path) == []
    server.files["rel/" + NAME] = ServedFile(SMALL)
    assert download_weights(entry_for(NAME, server.url("rel")), cache_dir=tmp_path, progress=False).read_bytes() == SMALL


def test_a_stalled_server_ends_with_the_download_timeout(server, tmp_path, monkeypatch):
    """torch.hub takes no timeout: the socket's is HF_HUB_DOWNLOAD_TIMEOUT, as for the Hub."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
    data = b"x" * (1 << 18)
    name = hash_named("slow", data)
    server.files["rel/" + name] = ServedFile(data, chunk_delay=30.0)
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"(?s)rel/slow.*timed out"):
        download_weights(entry_for(name, server.url("rel")), cache_dir=tmp_path, progress=False)
    assert time.monotonic() - start < 5.0 and _leftovers(tmp_path) == []


def test_a_held_lock_ends_in_an_error_naming_it(server, tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "LOCK_TIMEOUT_S", 0.2)
    server.files["rel/" + NAME] = ServedFile(SMALL)
    tmp_path.mkdir(exist_ok=True)
    with filelock.FileLock(str(tmp_path / f"{NAME}.lock")):
        with pytest.raises(WeightsError, match=rf"gave up after 0 s waiting for the lock file {tmp_path / NAME}\.lock"):
            download_weights(entry_for(NAME, server.url("rel")), cache_dir=tmp_path, progress=False)
    assert server.hits("rel/" + NAME) == 0


def test_unreachable_sources_give_one_actionable_error(server, tmp_path):
    port = closed_port()
    entry = entry_for(NAME, f"http://127.0.0.1:{port}/rel")
    with pytest.raises(WeightsError) as info:
        download_weights(entry, cache_dir=tmp_path, progress=False)
    msg = str(info.value)
    for needle in (f"http://127.0.0.1:{port}/rel/{NAME}", HUB_PATH + NAME, str(tmp_path / NAME), "weights=",
                   hub.MIRROR_ENV, "HF_ENDPOINT", "Tried:"):
        assert needle in msg, needle
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------ through the loss
def test_topiq_loss_downloads_registry_weights_end_to_end(server, monkeypatch, seeded_checkpoint, net):
    name = hash_named("cfanet_fr_test_res50", seeded_checkpoint)
    server.on_hub(name, ServedFile(seeded_checkpoint))
    monkeypatch.setitem(REGISTRY, "kadid", _official(name))
    loss_fn = TOPIQLoss(progress=False)  # the default weights
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loss_fn.score(x, y), net(x, y))


def test_official_entries_name_both_sources_offline(tmp_path):
    """No server at all (the suite runs offline): the error a user without a network reads."""
    official = REGISTRY["kadid"]
    with pytest.raises(WeightsError, match=r"(?s)cfanet_fr_kadid_res50-2c4cc61d\.pth.*chaofengc/IQA-PyTorch-Weights.*github\.com/chaofengc"):
        TOPIQLoss(cache_dir=tmp_path, progress=False)
    assert official.sha256_prefix == "2c4cc61d" and REGISTRY["pipal"].sha256_prefix == "69bbe5ba"


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
