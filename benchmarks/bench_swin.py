"""The Swin-B TOPIQ loss step against pyiqa's frozen CFANet-Swin, interleaved in one run.

The step: forward and backward to the input of the no-reference loss on an
(N, 3, 384, 384) batch (the network resizes to 384x384 itself; the aesthetics layout,
``cfanet_iaa_ava_swin``, on the same random weights for every row). Rows:

- ``topiq_loss`` (default): ``TOPIQNRLoss`` on the Swin-B CFANet, its window attention
  through ``F.scaled_dot_product_attention``;
- ``topiq_loss, torchvision attention``: the same network on torchvision's
  ``shifted_window_attention`` (the reference arithmetic);
- ``topiq_loss, checkpointing``: ``set_grad_checkpointing()`` (per Swin stage);
- ``pyiqa CFANet-Swin``: pyiqa's reference network (its own Swin), frozen.

Every row runs once per repeat, in turn, so that load on the machine reaches all alike;
the table gives the median and the ratio to pyiqa. Saved activations: the bytes autograd
keeps for backward (unique storages; the network's own tensors excluded), with and
without checkpointing.

    python benchmarks/bench_swin.py                   # 2x3x384x384, 2 threads, 5 repeats
    python benchmarks/bench_swin.py --repeats 3 --batch 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from topiq_loss import TOPIQNRLoss  # noqa: E402
from topiq_loss.models.cfanet_nr import CFANetNR  # noqa: E402

Step = Callable[[torch.Tensor], torch.Tensor]


def saved_bytes(step: Step, x: torch.Tensor, owned: set[int]) -> int:
    """Bytes of the tensors autograd saves for backward during ``step(x)`` (unique
    storages; storages in ``owned``, the networks' weights and buffers, excluded)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return t
        if storage.data_ptr() not in owned:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step(x.clone().requires_grad_(True))
    del loss
    return sum(seen.values())


def storages(*nets: nn.Module) -> set[int]:
    """Data pointers of the storages of ``nets``' tensors."""
    return {t.untyped_storage().data_ptr() for net in nets for t in (*net.parameters(), *net.buffers())}


def build(seed: int = 0) -> tuple[dict[str, Step], dict[str, nn.Module]]:
    """The rows' steps and their networks (pyiqa's when it can be loaded)."""
    import pyiqa_oracle

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ref = pyiqa_oracle.build_reference_swin_nr(aesthetics=True)
    ours = CFANetNR.swin_aesthetics().eval()
    steps: dict[str, Step] = {}
    nets: dict[str, nn.Module] = {}
    if ref is not None:
        ours.load_state_dict(ref.state_dict(), strict=True)
        ref.requires_grad_(False)
    loss = TOPIQNRLoss(net=ours, resize=None, score_range=(1.0, 10.0), check_values=False)
    steps["topiq_loss (SDPA windows)"] = loss
    nets["topiq_loss (SDPA windows)"] = loss.net

    def unfused(x: torch.Tensor) -> torch.Tensor:
        loss.net.semantic_model.set_fused(False)
        try:
            return loss(x)
        finally:
            loss.net.semantic_model.set_fused(True)

    def checkpointed(x: torch.Tensor) -> torch.Tensor:
        loss.set_grad_checkpointing(True)
        try:
            return loss(x)
        finally:
            loss.set_grad_checkpointing(False)

    steps["topiq_loss, torchvision attention"] = unfused
    steps["topiq_loss, checkpointing"] = checkpointed
    nets["topiq_loss, torchvision attention"] = nets["topiq_loss, checkpointing"] = loss.net
    if ref is not None:

        def reference(x: torch.Tensor) -> torch.Tensor:
            return ((10.0 - ref(x).reshape(-1)) / 9.0).mean()

        steps["pyiqa CFANet-Swin"] = reference
        nets["pyiqa CFANet-Swin"] = ref
    return steps, nets


def time_steps(
    steps: dict[str, Step], x: torch.Tensor, repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of forward+backward to the input per row, rows
    interleaved per repeat. (CPU seconds, all threads summed, move less than wall
    seconds when other processes share the cores.)"""
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeats + 1):  # the first round warms up
        for name, step in steps.items():
            xi = x.clone().requires_grad_(True)
            t0, c0 = time.perf_counter(), time.process_time()
            (g,) = torch.autograd.grad(step(xi), xi)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            assert torch.isfinite(g).all(), name
            if r:
                times[name].append(dt)
                cpu[name].append(dc)
    return times, cpu


def table(times: dict[str, list[float]], cpu: dict[str, list[float]], memory: dict[str, int]) -> str:
    """The markdown table of the rows (medians, ratios to pyiqa's row where there is one)."""
    ref = "pyiqa CFANet-Swin"
    base = statistics.median(times[ref]) if ref in times else None
    base_cpu = statistics.median(cpu[ref]) if ref in cpu else None
    lines = [
        "| row | wall s (median) | vs pyiqa | wall s (min) | CPU s (median) | vs pyiqa | saved activations MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ts in times.items():
        med, med_cpu = statistics.median(ts), statistics.median(cpu[name])
        ratio = f"{med / base:.2f}x" if base else "-"
        ratio_cpu = f"{med_cpu / base_cpu:.2f}x" if base_cpu else "-"
        mem = f"{memory[name] / 2**20:.0f}" if name in memory else "-"
        lines.append(f"| {name} | {med:.2f} | {ratio} | {min(ts):.2f} | {med_cpu:.2f} | {ratio_cpu} | {mem} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the saved-activation count")
    parser.add_argument("--rows", nargs="*", default=None, help="only the rows whose names contain one of these")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            steps, nets = build()
        gen = torch.Generator().manual_seed(1)
        x = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
        memory: dict[str, int] = {}
        if not args.no_memory:
            for name, step in steps.items():
                memory[name] = saved_bytes(step, x, storages(nets[name]))
        if args.rows:
            steps = {k: v for k, v in steps.items() if any(r in k for r in args.rows)}
        times, cpu = time_steps(steps, x, args.repeats)
        print(
            f"Swin-B TOPIQ loss step, forward+backward to the input, {args.batch}x3x{args.size}x{args.size}, "
            f"CPU, {args.threads} threads, median of {args.repeats} (torch {torch.__version__})"
        )
        print(table(times, cpu, memory))
        if "pyiqa CFANet-Swin" not in steps:
            print("(pyiqa or timm is not installed: no reference row)")
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
