"""The ranks of the multi-process tests (tests/test_distributed.py), run as
``python ddp_worker.py ...``; ``twin`` is their single-process twin, called in the test's
own process. Not a test module.

A small generator holds its own frozen TOPIQLoss (default weights, served by a local
test server into an empty cache). One spawn of two ranks trains copies of it with
DistributedDataParallel and then FSDP2 (three SGD steps on this rank's half of a fixed
batch each) and runs the Lightning example on the same two ranks, so the workers start
(import torch, build the network) once for the three checks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

STEPS = 3
BATCH = 4


class Generator(nn.Module):
    """A residual 2-conv network that owns its loss (as users' LightningModules do)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        from topiq_loss import TOPIQLoss

        self.criterion = TOPIQLoss(progress=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    target = torch.rand(BATCH, 3, 40, 40, generator=g)
    return (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1), target


def train(model: nn.Module, wrapped: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.05)
    losses = []
    for _ in range(STEPS):
        out = wrapped(x)
        loss = F.l1_loss(out, y) + model.criterion(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _run_mode(mode: str, model: Generator, rank: int, world: int, out_dir: Path) -> None:
    """Train a copy of the initial ``model`` in ``mode`` ("ddp" or "fsdp"); save its state and report."""
    x, y = data()
    report: dict[str, object] = {}
    if world > 1 and mode == "fsdp":
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor

        fully_shard(model.body)
        wrapped = fully_shard(model)
        half = BATCH // world
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        report["sharded"] = sum(isinstance(p, DTensor) for p in model.parameters())
        # the network's tensors themselves (buffers: it has no parameters), none sharded
        net_tensors = list(model.criterion.net.state_dict(keep_vars=True).values())
        report["loss_tensors"] = len(net_tensors)
        report["loss_sharded"] = sum(isinstance(t, DTensor) for t in net_tensors)
    elif world > 1:
        wrapped = nn.parallel.DistributedDataParallel(model)  # find_unused_parameters=False
        half = BATCH // world
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        buckets = {id(p) for p in wrapped.parameters()}
        report["ddp_params"] = len(buckets)
        net_tensors = list(model.criterion.net.state_dict(keep_vars=True).values())
        report["loss_tensors"] = len(net_tensors)
        report["loss_params_in_ddp"] = sum(id(t) in buckets for t in net_tensors)
    else:
        wrapped = model
    report["losses"] = train(model, wrapped, x, y)
    state = model.state_dict()
    if mode == "fsdp" and world > 1:
        # Gather the sharded parameters into full tensors for the comparison.
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}
    report["state_keys"] = sorted(state)
    torch.save(state, out_dir / f"{mode}_rank{rank}_of{world}.pt")
    if world > 1:
        dist.barrier()
    (out_dir / f"{mode}_rank{rank}_of{world}.json").write_text(json.dumps(report))


def _run_lightning(rank: int, world: int, lightning_args: list[str]) -> None:
    """The Lightning example's ``main`` on these ranks, launched externally (as torchrun would):
    LOCAL_RANK tells Lightning not to start processes, and it joins the process group already here."""
    import importlib.util

    os.environ.update(LOCAL_RANK=str(rank), NODE_RANK="0", WORLD_SIZE=str(world), RANK=str(rank))
    script = Path(__file__).resolve().parents[1] / "examples" / "lightning_sr.py"
    spec = importlib.util.spec_from_file_location("lightning_sr", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(lightning_args)


def twin(out_dir: Path) -> None:
    """The single-process twin, run in the calling process (no process start, no process
    group): the ranks' initial generator (seed 0; the caller's RNG is left as it was)
    trained on the whole batch. The caller points the default weights and TORCH_HOME."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks: the loss's gradient is sign-like, so float
    try:  # sums reordered by another thread count move the trained weights by ~1e-4
        with torch.random.fork_rng():
            torch.manual_seed(0)
            initial = Generator()
        _run_mode("ddp", initial, 0, 1, out_dir)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    """argv: rank world out_dir name url tests_dir modes [lightning args...]; modes is a
    comma list of "ddp", "fsdp" (each trains a copy of the same initial generator, in one
    process group) and "lightning" (the Lightning example, last; its args follow)."""
    rank, world, out_dir, name, url, tests = sys.argv[1:7]
    modes = (sys.argv[7] if len(sys.argv) > 7 else "ddp").split(",")
    lightning_args = sys.argv[8:]
    rank, world = int(rank), int(world)
    sys.path.insert(0, tests)
    from weights_server import entry_for

    import topiq_loss.weights.registry as w

    # the default weights, from the local server's release folder
    w.REGISTRY["kadid"] = dataclasses.replace(entry_for(name, url), name="kadid")
    torch.set_num_threads(1)
    torch.manual_seed(0)  # same initialisation on every rank and in the twin
    initial = Generator()  # one download (under the lock) and one network for every mode
    dist.init_process_group("gloo", init_method=os.environ["TOPIQ_TEST_RENDEZVOUS"], rank=rank, world_size=world)
    for mode in modes:
        if mode == "lightning":
            _run_lightning(rank, world, lightning_args)
        else:
            _run_mode(mode, copy.deepcopy(initial), rank, world, Path(out_dir))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
