"""One rank of the multi-process DDP test (tests/test_distributed.py); also its
single-process twin. Not a test module: run as ``python ddp_worker.py ...``.

A small generator holds its own frozen TOPIQLoss (default weights, served by a local
test server into an empty cache), is wrapped in DistributedDataParallel, and trains
three SGD steps on this rank's half of a fixed batch.
"""

from __future__ import annotations

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


def main() -> None:
    rank, world, out_dir, name, url, tests = sys.argv[1:7]
    mode = sys.argv[7] if len(sys.argv) > 7 else "ddp"
    rank, world = int(rank), int(world)
    sys.path.insert(0, tests)
    from weights_server import entry_for

    import topiq_loss.weights.registry as w

    w.WEIGHTS["kadid"] = entry_for(name, url)  # the default weights, from the local server
    torch.set_num_threads(1)
    torch.manual_seed(0)  # same initialisation on every rank and in the twin
    model = Generator()
    x, y = data()
    report: dict[str, object] = {}
    if world > 1 and mode == "fsdp":
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor

        dist.init_process_group("gloo", init_method=os.environ["TOPIQ_TEST_RENDEZVOUS"], rank=rank, world_size=world)
        fully_shard(model.body)
        wrapped = fully_shard(model)
        half = BATCH // world
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        report["sharded"] = sum(isinstance(p, DTensor) for p in model.parameters())
        report["loss_sharded"] = sum(isinstance(p, DTensor) for p in model.criterion.net.parameters())
    elif world > 1:
        dist.init_process_group("gloo", init_method=os.environ["TOPIQ_TEST_RENDEZVOUS"], rank=rank, world_size=world)
        wrapped = nn.parallel.DistributedDataParallel(model)  # find_unused_parameters=False
        half = BATCH // world
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        buckets = {id(p) for p in wrapped.parameters()}
        report["ddp_params"] = len(buckets)
        report["loss_params_in_ddp"] = sum(id(p) in buckets for p in model.criterion.net.parameters())
    else:
        wrapped = model
    report["losses"] = train(model, wrapped, x, y)
    state = model.state_dict()
    if mode == "fsdp" and world > 1:
        # Gather the sharded parameters into full tensors for the comparison.
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}
    report["state_keys"] = sorted(state)
    torch.save(state, Path(out_dir) / f"{mode}_rank{rank}_of{world}.pt")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    (Path(out_dir) / f"{mode}_rank{rank}_of{world}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
