"""Multi-process DistributedDataParallel (gloo, CPU) with the loss inside the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from weights_server import ServedFile, hash_named

TESTS = Path(__file__).parent
WORKER = TESTS / "ddp_worker.py"

pytestmark = pytest.mark.usefixtures("fresh_hub_state")


def _run(world: int, out: Path, name: str, url: str, torch_home: Path, mode: str = "ddp") -> list[dict]:
    # A file rendezvous, not a TCP port: a port found free here can be taken before the
    # ranks bind it, which failed this test once on a busy machine.
    store = out / f"{mode}_store_of{world}"
    store.unlink(missing_ok=True)
    env = dict(os.environ, TOPIQ_TEST_RENDEZVOUS=f"file://{store}", TORCH_HOME=str(torch_home))
    env.pop("TOPIQ_LOSS_MIRROR", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), str(world), str(out), name, url, str(TESTS), mode],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in range(world)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
    return [json.loads((out / f"{mode}_rank{r}_of{world}.json").read_text()) for r in range(world)]


def test_two_process_ddp_equals_one_process_on_the_whole_batch(server, tmp_path, seeded_checkpoint):
    name = hash_named("cfanet_fr_ddp_res50", seeded_checkpoint)
    server.files[name] = ServedFile(seeded_checkpoint, chunk_delay=0.0002)
    ddp_home, single_home = tmp_path / "ddp_home", tmp_path / "single_home"
    reports = _run(2, tmp_path, name, server.url(name), ddp_home)
    # First use on two ranks with an empty cache: one download, under the lock.
    assert server.hits(name) == 1
    cache = ddp_home / "hub" / "checkpoints"
    assert sorted(p.name for p in cache.iterdir()) == [name]  # the lock file ends with the download

    _run(1, tmp_path, name, server.url(name), single_home)
    ranks = [torch.load(tmp_path / f"ddp_rank{r}_of2.pt", weights_only=True) for r in range(2)]
    single = torch.load(tmp_path / "ddp_rank0_of1.pt", weights_only=True)
    # The loss network is in no DDP bucket and in no checkpoint.
    assert reports[0]["ddp_params"] == 4 and reports[0]["loss_params_in_ddp"] == 0
    assert reports[0]["state_keys"] == ["body.0.bias", "body.0.weight", "body.2.bias", "body.2.weight"]
    for k in single:
        assert torch.equal(ranks[0][k], ranks[1][k]), k  # DDP keeps the ranks identical
        assert torch.allclose(ranks[0][k], single[k], atol=1e-5), k
    # Training moved the parameters (the comparison is not between untouched inits).
    torch.manual_seed(0)
    init = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1))
    assert (init[0].weight - single["body.0.weight"]).abs().max() > 1e-4
    # A checkpoint written by rank 0 loads strictly into a fresh generator (which builds
    # its own loss from the now cached weights).
    from ddp_worker import Generator
    from weights_server import entry_for

    import topiq_loss.weights.registry as w

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(w.WEIGHTS, "kadid", entry_for(name, server.url(name)))
        mp.setenv("TORCH_HOME", str(ddp_home))
        fresh = Generator()
    fresh.load_state_dict(ranks[0], strict=True)
    assert server.hits(name) == 2  # the DDP ranks' one download and the single run's; none more


def test_lightning_example_trains_on_two_processes(tmp_path, weights_file):
    pytest.importorskip("lightning", reason="the Lightning example needs the [lightning] extra")
    pytest.importorskip("skimage", reason="the examples need scikit-image (the [examples] extra)")
    script = TESTS.parent / "examples" / "lightning_sr.py"
    out = tmp_path / "lt"
    args = ["--steps", "3", "--batch", "2", "--patch", "64", "--devices", "2", "--strategy", "ddp"]
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--weights", str(weights_file), "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train/topiq" in proc.stdout and "train/total" in proc.stdout
    (ckpt,) = out.rglob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    # Only the SR network is checkpointed: the frozen TOPIQ network is hidden.
    assert state and all(k.startswith("model.") for k in state), sorted(state)[:5]


def test_fsdp2_on_cpu_shards_the_generator_not_the_loss(server, tmp_path, seeded_checkpoint):
    name = hash_named("cfanet_fr_fsdp_res50", seeded_checkpoint)
    server.files[name] = ServedFile(seeded_checkpoint)
    reports = _run(2, tmp_path, name, server.url(name), tmp_path / "home", mode="fsdp")
    _run(1, tmp_path, name, server.url(name), tmp_path / "home", mode="ddp")
    assert reports[0]["sharded"] == 4 and reports[0]["loss_sharded"] == 0
    assert reports[0]["state_keys"] == ["body.0.bias", "body.0.weight", "body.2.bias", "body.2.weight"]
    full = [torch.load(tmp_path / f"fsdp_rank{r}_of2.pt", weights_only=True) for r in range(2)]
    single = torch.load(tmp_path / "ddp_rank0_of1.pt", weights_only=True)
    for k in single:
        assert torch.allclose(full[0][k], single[k], atol=1e-5), k
        assert torch.equal(full[0][k], full[1][k]), k
