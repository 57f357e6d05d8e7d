"""How the cost of one forward+backward grows with resolution (batch 1, square images).

For each size, this package's default ``TOPIQLoss`` and pyiqa's CFANet (same random
weights) take turns, the order alternating between repeats, so that a slow spell on a
shared machine hits both alike. Reported per size:

- seconds per step (median of the repeats) and per 256x256 block (65536 px), so that a
  constant cost per pixel reads as a flat column;
- saved activation memory: bytes of the tensors autograd keeps for backward (one
  count per storage, parameters and buffers excluded), measured on the warm-up step;
- on CPU, the process's CPU seconds per block too: on a shared machine wall time
  includes waiting for a core, CPU time much less so (with one thread it is the work);
- minor page faults per step (``getrusage``), which on CPU tell whether large
  temporaries are being mmap'd and faulted in afresh at every call.

    python benchmarks/resolution_sweep.py                      # 256 .. 1536 px, 3 repeats
    python benchmarks/resolution_sweep.py --sizes 512 1536 --repeats 2 --no-pyiqa
    python benchmarks/resolution_sweep.py --with-2048 --device cuda
    python benchmarks/resolution_sweep.py --sizes 512 1536 --profile 512 1536   # top ops
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_loss import saved_bytes  # noqa: E402
from seeded_weights import seeded_state_dict  # noqa: E402

from topiq_loss import CFANetFR, TOPIQLoss  # noqa: E402

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BLOCK = 256 * 256


def timed(step: Step, pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float, int]:
    """Wall and process CPU seconds of one forward+backward (device synchronised), and the
    minor page faults it took."""
    p = pred.clone().requires_grad_(True)
    if p.is_cuda:
        torch.cuda.synchronize()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    step(p, target).backward()
    if p.is_cuda:
        torch.cuda.synchronize()
    t1, c1 = time.perf_counter(), time.process_time()
    return t1 - t0, c1 - c0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def storage_ptrs(module: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}


def build_rows(device: torch.device, with_pyiqa: bool) -> list[tuple[str, Step, set[int]]]:
    """(label, step, weight storages) for ours (default settings) and pyiqa's CFANet."""
    net = CFANetFR()
    state = seeded_state_dict(net.state_dict())
    net.load_state_dict(state)
    loss = TOPIQLoss(net=net.requires_grad_(False).eval()).to(device)
    rows: list[tuple[str, Step, set[int]]] = [
        ("ours", lambda p, t: loss(p, t), storage_ptrs(loss.net))
    ]
    if with_pyiqa:
        from pyiqa_oracle import build_reference_fr

        ref = build_reference_fr()
        if ref is None:
            print("# pyiqa (or timm) not installed: its rows are skipped", file=sys.stderr)
        else:
            ref.load_state_dict(state)
            ref = ref.to(device).requires_grad_(False).eval()
            rows.append(("pyiqa", lambda p, t: (1 - ref(p, t)).mean(), storage_ptrs(ref)))
    return rows


def images(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(size)
    target = torch.rand(1, 3, size, size, generator=g)
    pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    return pred.to(device), target.to(device)


def profile(step: Step, pred: torch.Tensor, target: torch.Tensor, label: str, top: int) -> None:
    """Top ops by self time of one forward+backward, in ms per 256x256 block."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    blocks = pred.shape[-2] * pred.shape[-1] / BLOCK
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if pred.is_cuda else [])
    p = pred.clone().requires_grad_(True)
    with torch_profile(activities=acts) as prof:
        step(p, target).backward()
    events = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total if pred.is_cuda else e.self_cpu_time_total, reverse=True)
    total = sum(e.self_device_time_total if pred.is_cuda else e.self_cpu_time_total for e in events)
    print(f"\n### profile {label}, {pred.shape[-1]} px: {total / 1e3:.0f} ms self time, {total / 1e3 / blocks:.0f} ms per block")
    print(f"| {'op':<44} | {'calls':>5} | {'ms':>8} | {'ms/block':>8} | {'share':>5} |")
    print(f"|{'-' * 46}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 7}|")
    for e in events[:top]:
        us = e.self_device_time_total if pred.is_cuda else e.self_cpu_time_total
        print(f"| {e.key[:44]:<44} | {e.count:>5} | {us / 1e3:>8.1f} | {us / 1e3 / blocks:>8.1f} | {us / total:>5.1%} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 1536], help="square sizes in px")
    ap.add_argument("--with-2048", action="store_true", help="add 2048 px")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps per row and size (median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the CI machine has 2)")
    ap.add_argument("--no-pyiqa", action="store_true", help="time this package only")
    ap.add_argument("--profile", type=int, nargs="*", default=[], help="sizes at which to profile one step of ours")
    ap.add_argument("--top", type=int, default=15, help="ops listed per profile")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    device = torch.device(args.device)
    sizes = sorted(set(args.sizes + ([2048] if args.with_2048 else [])))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    load = " load average {:.2f} {:.2f} {:.2f};".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(f"# torch {torch.__version__}, {where};{load} batch 1, forward+backward, median of {args.repeats}")
    print("# seeded random weights (tests/seeded_weights.py): cost does not depend on the weights")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = build_rows(device, not args.no_pyiqa)
    results: dict[tuple[str, int], tuple[float, float, float, int, int]] = {}
    for size in sizes:
        pred, target = images(size, device)
        saved = {label: saved_bytes(step, pred, target, w) for label, step, w in rows}  # also the warm-up
        times: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        faults: dict[str, list[int]] = {label: [] for label, _, _ in rows}
        for r in range(args.repeats):
            for label, step, _ in rows if r % 2 == 0 else rows[::-1]:
                t, c, f = timed(step, pred, target)
                times[label].append(t)
                cpu[label].append(c)
                faults[label].append(f)
        for label in times:
            med = statistics.median
            results[label, size] = (med(times[label]), min(times[label]), med(cpu[label]), saved[label], int(med(faults[label])))
        print(f"# {size} px done: " + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in times.items()), flush=True)
        if size in args.profile:
            for label, step, _ in rows[:1]:
                profile(step, pred, target, label, args.top)
    labels = [label for label, _, _ in rows]
    head = " | ".join(f"{k} s/step | {k} s/block (min) | {k} CPU s/block | {k} saved MiB | {k} faults/step" for k in labels)
    print(f"\n| px | MPix | {head} |" + (" time ours/pyiqa | saved ours/pyiqa |" if len(labels) == 2 else ""))
    print("|---|---|" + "---|" * (5 * len(labels)) + ("---|---|" if len(labels) == 2 else ""))
    for size in sizes:
        blocks = size * size / BLOCK
        cells = []
        for k in labels:
            med, best, cpu_s, saved, flt = results[k, size]
            cells.append(f"{med:.2f} | {med / blocks:.3f} ({best / blocks:.3f}) | {cpu_s / blocks:.3f} | {saved / 2**20:.0f} | {flt / 1e3:.0f}k")
        ratio = ""
        if len(labels) == 2:
            (a, _, _, sa, _), (b, _, _, sb, _) = results[labels[0], size], results[labels[1], size]
            ratio = f" {a / b:.2f} | {sa / sb:.2f} |"
        print(f"| {size} | {size * size / 1e6:.2f} | " + " | ".join(cells) + " |" + ratio)
    if 512 in sizes and max(sizes) > 512:
        big = max(sizes)
        ratio = big * big / 512**2
        growth = ", ".join(
            f"{k} wall {results[k, big][0] / results[k, 512][0] / ratio:.2f}x, CPU {results[k, big][2] / results[k, 512][2] / ratio:.2f}x"
            for k in labels
        )
        print(f"\ntime per pixel, {big} px over 512 px: {growth}")
    if hasattr(os, "getloadavg"):
        print("# load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
