"""Throughput of the command line: a folder in one process vs one pair per process.

Writes N image pairs (SIZE x SIZE PNGs: smooth colour fields with noise) to a temporary
folder, then times, as a user would run them:

- ``topiq-loss score DIST_DIR REF_DIR``: one process, the network built once, equal
  sizes batched;
- ``topiq-loss score DIST REF`` once per pair: a process, an import and a network
  build per pair (what a shell loop over the old CLI did).

Both use the same ``--weights`` (default ``random``: untrained weights, so the scores are
meaningless, but every layer runs as with the official files; an offline machine can run
it). Wall-clock seconds include process start, imports, decoding and the network build;
CPU seconds (user + system of the child processes) are printed beside them, as they move
less on a shared machine.

    python benchmarks/bench_cli.py                     # 8 pairs at 512 px, CPU
    python benchmarks/bench_cli.py --pairs 32 --device cuda --weights kadid
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _write_pairs(folder: Path, pairs: int, size: int) -> tuple[Path, Path]:
    from topiq_loss.cli.images import to_pil

    dist, ref = folder / "dist", folder / "ref"
    dist.mkdir()
    ref.mkdir()
    gen = torch.Generator().manual_seed(0)
    for k in range(pairs):
        coarse = torch.rand(1, 3, size // 16, size // 16, generator=gen)
        r = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        r = (r + 0.03 * torch.randn(r.shape, generator=gen)).clamp(0, 1)
        to_pil(r).save(ref / f"{k:04d}.png")
        to_pil((r + 0.08 * torch.randn(r.shape, generator=gen)).clamp(0, 1)).save(dist / f"{k:04d}.png")
    return dist, ref


def _run(args: list[str], threads: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, the child's) of one CLI process."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "topiq_loss.cli.app", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=8, help="image pairs (default 8)")
    p.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    p.add_argument("--weights", default="random", help="--weights for both runs (default random)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=8, help="folder run's --batch-size (default 8)")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the runs (default: unset)")
    args = p.parse_args()
    common = ["--weights", args.weights, "--device", args.device, "-q"]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        dist, ref = _write_pairs(Path(tmp), args.pairs, args.size)
        folder = _run(["score", str(dist), str(ref), *common, "--batch-size", str(args.batch_size)], args.threads)
        runs = [
            _run(["score", str(dist / f"{k:04d}.png"), str(ref / f"{k:04d}.png"), *common], args.threads)
            for k in range(args.pairs)
        ]
        single = (sum(w for w, _ in runs), sum(c for _, c in runs))
    print(f"topiq-loss score, {args.pairs} pairs of {args.size}x{args.size} px, weights {args.weights!r}"
          f"{' (untrained: timing only)' if args.weights == 'random' else ''}, device {args.device}, "
          f"torch threads {args.threads or torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print(f"load average before the runs: {load[0]:.1f} (a loaded machine inflates wall time, less so CPU time)")
    print(f"{'mode':<24}{'wall s':>8}{'images/s':>10}{'CPU s':>8}{'images/CPU s':>14}")
    for name, (wall, cpu) in (("folder, one process", folder), ("one pair per process", single)):
        print(f"{name:<24}{wall:>8.1f}{args.pairs / wall:>10.3f}{cpu:>8.1f}{args.pairs / cpu:>14.3f}")
    print(f"speed-up: {single[0] / folder[0]:.1f}x wall, {single[1] / folder[1]:.1f}x CPU")


if __name__ == "__main__":
    main()
