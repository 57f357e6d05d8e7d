"""Multi-process training on CPU (gloo) with the loss inside the model: DDP, FSDP2 and the
Lightning example. One spawn of two ranks runs all three (tests/ddp_worker.py), because
starting the workers (torch, the network, the download) is most of the cost; each test
below asserts its own part of that run."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from weights_server import ServedFile, hash_named, start_server

TESTS = Path(__file__).parent
WORKER = TESTS / "ddp_worker.py"
LIGHTNING = importlib.util.find_spec("lightning") is not None and importlib.util.find_spec("skimage") is not None
LIGHTNING_ARGS = ["--steps", "3", "--batch", "2", "--patch", "64", "--devices", "2", "--strategy", "ddp"]

# The module's tests share one spawn (the fixture below): keep them on one xdist worker.
pytestmark = [pytest.mark.usefixtures("fresh_hub_state"), pytest.mark.xdist_group("distributed")]


def _run(world: int, out: Path, name: str, url: str, torch_home: Path, modes: str, extra: list[str] = ()) -> list[dict]:
    # A file rendezvous, not a TCP port: a port found free here can be taken before the
    # ranks bind it, which failed this test once on a busy machine.
    store = out / f"store_of{world}"
    store.unlink(missing_ok=True)
    env = dict(os.environ, TOPIQ_TEST_RENDEZVOUS=f"file://{store}", TORCH_HOME=str(torch_home))
    # The fake Hub (it lacks the file: the release folder `url` serves it), online.
    env.update(HF_ENDPOINT=url.rsplit("/", 1)[0], HF_HUB_OFFLINE="0", HF_HOME=str(torch_home / "hf"))
    env.pop("TOPIQ_LOSS_MIRROR", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), str(world), str(out), name, url, str(TESTS), modes, *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=out,
        )
        for r in range(world)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
    return [{"stdout": o[0]} for o in outs]


@pytest.fixture(scope="module")
def spawn(tmp_path_factory, seeded_checkpoint, weights_file):
    """Two ranks (DDP, FSDP2, Lightning) from an empty cache, then the single-process twin
    (from its own empty cache)."""
    out = tmp_path_factory.mktemp("distributed")
    state, srv = start_server()
    try:
        name = hash_named("cfanet_fr_ddp_res50", seeded_checkpoint)
        state.files["rel/" + name] = ServedFile(seeded_checkpoint, chunk_delay=0.0002)
        modes = "ddp,fsdp,lightning" if LIGHTNING else "ddp,fsdp"
        lightning_args = [*LIGHTNING_ARGS, "--weights", str(weights_file), "--out", str(out / "lt")]
        ranks = _run(2, out, name, state.url("rel"), out / "ddp_home", modes, lightning_args if LIGHTNING else [])
        hits_after_ranks = state.hits("rel/" + name)
        cache = sorted(p.name for p in (out / "ddp_home" / "hub" / "checkpoints").iterdir() if p.suffix != ".lock")
        # The twin runs in this process (torch is already imported; it trains on one thread,
        # as the ranks do): a third process start would cost more than its training.
        from conftest import point_hub_at
        from ddp_worker import twin
        from weights_server import entry_for

        import topiq_loss.weights.registry as w

        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(w.REGISTRY, "kadid", dataclasses.replace(entry_for(name, state.url("rel")), name="kadid"))
            mp.setenv("TORCH_HOME", str(out / "single_home"))
            point_hub_at(mp, state.url().rstrip("/"), out / "single_home" / "hf")
            twin(out)
        yield {
            "out": out, "name": name, "url": state.url("rel"), "state": state, "ranks": ranks,
            "hits_after_ranks": hits_after_ranks, "cache": cache,
        }
    finally:
        srv.shutdown()
        srv.server_close()


def _reports(out: Path, mode: str, world: int) -> list[dict]:
    return [json.loads((out / f"{mode}_rank{r}_of{world}.json").read_text()) for r in range(world)]


def test_two_process_ddp_equals_one_process_on_the_whole_batch(spawn):
    out, name, state = spawn["out"], spawn["name"], spawn["state"]
    reports = _reports(out, "ddp", 2)
    # First use on two ranks with an empty cache: one download, under the lock.
    assert spawn["hits_after_ranks"] == 1
    assert spawn["cache"] == [name]
    ranks = [torch.load(out / f"ddp_rank{r}_of2.pt", weights_only=True) for r in range(2)]
    single = torch.load(out / "ddp_rank0_of1.pt", weights_only=True)
    # The loss network is in no DDP bucket and in no checkpoint.
    assert reports[0]["ddp_params"] == 4 and reports[0]["loss_params_in_ddp"] == 0
    assert reports[0]["loss_tensors"] > 300  # the counts above looked at the network itself
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
    from conftest import point_hub_at
    from ddp_worker import Generator
    from weights_server import entry_for

    import topiq_loss.weights.registry as w

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(w.REGISTRY, "kadid", dataclasses.replace(entry_for(name, spawn["url"]), name="kadid"))
        mp.setenv("TORCH_HOME", str(out / "ddp_home"))
        point_hub_at(mp, state.url().rstrip("/"), out / "ddp_home" / "hf")
        fresh = Generator()
    fresh.load_state_dict(ranks[0], strict=True)
    assert state.hits("rel/" + name) == 2  # the ranks' one download and the single run's; none more


def test_fsdp2_on_cpu_shards_the_generator_not_the_loss(spawn):
    out = spawn["out"]
    reports = _reports(out, "fsdp", 2)
    assert reports[0]["sharded"] == 4 and reports[0]["loss_sharded"] == 0
    assert reports[0]["loss_tensors"] > 300
    assert reports[0]["state_keys"] == ["body.0.bias", "body.0.weight", "body.2.bias", "body.2.weight"]
    full = [torch.load(out / f"fsdp_rank{r}_of2.pt", weights_only=True) for r in range(2)]
    single = torch.load(out / "ddp_rank0_of1.pt", weights_only=True)
    for k in single:
        assert torch.allclose(full[0][k], single[k], atol=1e-5), k
        assert torch.equal(full[0][k], full[1][k]), k


def test_lightning_example_trains_on_two_processes(spawn):
    if not LIGHTNING:
        pytest.skip("the Lightning example needs the [lightning] and [examples] extras (lightning, scikit-image)")
    stdout = spawn["ranks"][0]["stdout"]  # rank 0 prints the logged metrics
    assert "train/topiq" in stdout and "train/total" in stdout
    (ckpt,) = (spawn["out"] / "lt").rglob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    # Only the SR network is checkpointed: the frozen TOPIQ network is hidden.
    assert state and all(k.startswith("model.") for k in state), sorted(state)[:5]
