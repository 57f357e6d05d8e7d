"""Faults: concurrent first use, killed downloads, corrupt caches, hostile files."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from weights_server import ServedFile, entry_for, hash_named

import topiq_loss.weights.hub as hub
from topiq_loss import TOPIQLoss, WeightsError, download_weights, read_state_dict

TESTS = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("fresh_hub_state")


WORKER = textwrap.dedent(
    """
    import dataclasses, sys, torch
    import topiq_loss.weights.registry as w
    from topiq_loss import TOPIQLoss
    name, url = sys.argv[1], sys.argv[2]
    sys.path.insert(0, sys.argv[3])
    from weights_server import entry_for
    w.REGISTRY["kadid"] = dataclasses.replace(entry_for(name, url), name="kadid")
    torch.set_num_threads(1)
    loss = TOPIQLoss(progress=False)   # default weights, default (TORCH_HOME) cache
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        print(repr(loss.score(x, y).item()))
    """
)


def _env(tmp_path: Path, server) -> dict[str, str]:
    env = dict(os.environ)
    env["TORCH_HOME"] = str(tmp_path / "torch_home")
    env.update(HF_ENDPOINT=server.url().rstrip("/"), HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf"))
    env.pop(hub.MIRROR_ENV, None)
    return env


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_concurrent_processes_first_use_download_once(server, tmp_path, seeded_checkpoint, net):
    name = hash_named("cfanet_fr_test_res50", seeded_checkpoint)
    server.files["rel/" + name] = ServedFile(seeded_checkpoint, chunk_delay=0.0005)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, name, server.url("rel"), str(TESTS)],
            env=_env(tmp_path, server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(4)  # four racing first uses exercise the lock as eight did, at half the cost
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    scores = {float(o[0].strip()) for o in outs}
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        want = net(x, y).item()
    # Same weights in every process; 1 thread there vs 2 here reorders float32 sums.
    assert len(scores) == 1 and abs(scores.pop() - want) < 1e-5
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert _files(cache) == [name]
    assert (cache / name).read_bytes() == seeded_checkpoint
    assert server.hits("rel/" + name) == 1  # the lock file serialises the first download


def test_killed_download_leaves_nothing_valid_and_next_run_recovers(server, tmp_path):
    data = os.urandom(4 << 20)
    name = hash_named("big", data)
    server.files["rel/" + name] = ServedFile(data, chunk_delay=0.01)  # ~0.6 s for 4 MiB
    script = textwrap.dedent(
        """
        import sys
        from topiq_loss import download_weights
        name, url, cache = sys.argv[1], sys.argv[2], sys.argv[3]
        sys.path.insert(0, sys.argv[4])
        from weights_server import entry_for
        download_weights(entry_for(name, url), cache_dir=cache, progress=False)
        """
    )
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", script, name, server.url("rel"), str(cache), str(TESTS)],
                            env=_env(tmp_path, server))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(cache.glob("*.partial")):
        time.sleep(0.02)
    assert any(cache.glob("*.partial")), "download never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (cache / name).exists()  # nothing under the final name
    path = download_weights(entry_for(name, server.url("rel")), cache_dir=cache, progress=False)
    assert path.read_bytes() == data
    assert _files(cache) == [name]  # the stale partial file removed


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_cached_file_is_detected_removed_and_redownloaded(server, tmp_path, damage):
    data = os.urandom(200_000)
    name = hash_named("w", data)
    server.files["rel/" + name] = ServedFile(data)
    entry = entry_for(name, server.url("rel"))
    path = download_weights(entry, cache_dir=tmp_path, progress=False)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:1000]
    else:
        raw[5000] ^= 0xFF
    path.write_bytes(bytes(raw))
    hub._checked.clear()  # the next process
    with pytest.warns(RuntimeWarning, match=r"were refused \(sha256 .*; removed"):
        again = download_weights(entry, cache_dir=tmp_path, progress=False)
    assert again.read_bytes() == data and server.hits("rel/" + name) == 2


def test_cached_file_hashed_once_per_process(server, tmp_path, monkeypatch):
    data = os.urandom(10_000)
    name = hash_named("w", data)
    server.files["rel/" + name] = ServedFile(data)
    entry = entry_for(name, server.url("rel"))
    download_weights(entry, cache_dir=tmp_path, progress=False)
    calls = []
    real = hub.sha256_file
    monkeypatch.setattr(hub, "sha256_file", lambda p: calls.append(p) or real(p))
    hub._checked.clear()
    for _ in range(3):
        download_weights(entry, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/topiq_loss_pwned",))


def _hostile_files(tmp_path: Path, seeded_state) -> dict[str, tuple[Path, str]]:
    from torchvision.models import resnet50

    files = {}
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"params": _Evil()}, f)
    files["code-running pickle"] = (p, r"evil\.pth (was refused|is not a readable PyTorch checkpoint)")
    p = tmp_path / "evil_torch.pth"
    torch.save({"params": {"x": torch.zeros(1)}, "hook": _Evil()}, p)
    files["torch.save with code"] = (p, r"evil_torch\.pth was refused")
    p = tmp_path / "nr.pth"
    nr = {k: v for k, v in seeded_state.items() if not k.startswith("dim_reduce")}
    nr.update({f"dim_reduce.{i}.0.weight": torch.zeros(256, c, 1, 1) for i, c in enumerate((64, 256, 512, 1024, 2048))})
    torch.save({"params": nr}, p)
    files["NR-shaped checkpoint"] = (p, r"nr\.pth is not a CFANet-FR.*5 shape mismatches \(dim_reduce\.0\.0\.weight \(256, 64, 1, 1\) vs \(256, 192, 1, 1\)")
    p = tmp_path / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), p)
    files["bare ResNet50"] = (p, r"resnet50\.pth is not a CFANet-FR.*missing keys \(attn_blks.*unexpected keys \(bn1\.bias")
    p = tmp_path / "empty.pth"
    p.write_bytes(b"")
    files["empty file"] = (p, r"empty\.pth is empty")
    p = tmp_path / "notes.txt"
    p.write_text("these are not weights\n")
    files["text file"] = (p, r"notes\.txt (was refused|is not a readable PyTorch checkpoint)")
    p = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], p)
    files["list of tensors"] = (p, r"list\.pth holds list, expected a state dict")
    return files


def test_hostile_and_wrong_files_get_one_clear_error(tmp_path, seeded_state):
    marker = Path("/tmp/topiq_loss_pwned")
    marker.unlink(missing_ok=True)
    for label, (path, pattern) in _hostile_files(tmp_path, seeded_state).items():
        with pytest.raises(WeightsError, match=pattern):
            TOPIQLoss(weights=str(path))
        assert not marker.exists(), f"{label}: code ran"


def test_read_state_dict_accepts_params_and_bare(tmp_path):
    t = {"a": torch.ones(2)}
    torch.save({"params": t}, tmp_path / "p.pth")
    torch.save(t, tmp_path / "b.pth")
    assert torch.equal(read_state_dict(tmp_path / "p.pth")["a"], t["a"])
    assert torch.equal(read_state_dict(tmp_path / "b.pth")["a"], t["a"])
