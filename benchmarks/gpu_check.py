"""The GPU check: one command, one table (CUDA tests, speed and memory, accuracy per precision).

On a CUDA machine, in under 8 minutes:

1. the CUDA tests (``pytest -k cuda``: tests named or marked ``cuda``), in a subprocess;
2. forward+backward of ``TOPIQLoss`` (default fused backbone, contiguous and channels-last)
   and pyiqa's CFANet side by side, per precision: fp32 with TF32 off, fp32 with torch's
   flags as found, TF32, fp16 and bf16 autocast (ours with ``amp_backbone`` False and True):
   ms per step (synchronised, median after warm-up) and peak memory of the step;
3. the accuracy contract per precision (tests/accuracy_cases.py): input-gradient relative
   L2 error against the float64 network, geometric mean and max, and the largest score
   difference to pyiqa in fp32 (TF32 off);

then prints one markdown table. Every row is guarded (an error is written into the
table), each section has a time budget, and a watchdog prints what was measured and
exits if the whole run exceeds ``--max-seconds``. Weights are seeded random ones.

    python benchmarks/gpu_check.py --out gpu_check.md
    python benchmarks/gpu_check.py --device cpu --quick     # dry run on CPU, tiny shapes
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Precision:
    label: str
    tf32: bool | None  # None: torch's flags as found
    autocast: torch.dtype | None = None
    amp_backbone: bool = False


PRECISIONS = [
    Precision("fp32, TF32 off", False),
    Precision("fp32, flags as found", None),
    Precision("TF32 (matmul + cuDNN)", True),
    Precision("fp16 autocast", None, torch.float16),
    Precision("fp16 autocast + amp_backbone", None, torch.float16, True),
    Precision("bf16 autocast", None, torch.bfloat16),
    Precision("bf16 autocast + amp_backbone", None, torch.bfloat16, True),
]


@contextlib.contextmanager
def tf32(enabled: bool | None) -> Iterator[None]:
    """TF32 for matmuls and cuDNN set to ``enabled`` inside, the previous values restored after."""
    cuda, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (cuda.allow_tf32, cudnn.allow_tf32)
    try:
        if enabled is not None and saved != (enabled, enabled):
            cuda.allow_tf32, cudnn.allow_tf32 = enabled, enabled
        yield
    finally:
        if (cuda.allow_tf32, cudnn.allow_tf32) != saved:
            cuda.allow_tf32, cudnn.allow_tf32 = saved


@dataclass
class Row:
    model: str
    variant: str
    prec: Precision
    step: Fn  # scalar loss, forward under the row's autocast
    score: Fn  # (N,) scores, forward under the row's autocast
    cells: dict[str, str] = field(default_factory=dict)
    errs: list[float] = field(default_factory=list)
    dscore: float = 0.0


@dataclass
class Report:
    header: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: bool = False

    def error(self, row: Row, key: str, exc: BaseException) -> None:
        self.failed = True
        row.cells[key] = f"error [{len(self.notes) + 1}]"
        self.notes.append(f"[{len(self.notes) + 1}] {row.model} {row.variant} {row.prec.label}, {key}: {type(exc).__name__}: {str(exc)[:300]}")

    def render(self) -> str:
        cols = [c for s in self.shapes for c in (f"ms {s}", f"peak MiB {s}")]
        cols += ["grad err geomean", "grad err max", "cases", "max abs score diff vs pyiqa fp32", "contract"]
        lines = [*self.header, "", "| model | variant | precision | " + " | ".join(cols) + " |", "|---" * (3 + len(cols)) + "|"]
        for r in self.rows:
            cells = [r.cells.get(c, "not run (budget)") for c in cols]
            lines.append(f"| {r.model} | {r.variant} | {r.prec.label} | " + " | ".join(cells) + " |")
        return "\n".join(lines + [""] + self.notes)


def with_autocast(fn: Fn, prec: Precision, device: str) -> Fn:
    if prec.autocast is None:
        return fn

    def run(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=prec.autocast):
            return fn(p, t)

    return run


def build(device: torch.device) -> tuple[list[Row], torch.nn.Module, Fn | None]:
    """The rows, the float64 network and pyiqa's fp32 score (None without pyiqa)."""
    from pyiqa_oracle import build_reference_fr
    from seeded_weights import seeded_state_dict

    from topiq_loss import CFANetFR, TOPIQLoss

    net = CFANetFR()
    state = seeded_state_dict(net.state_dict())
    net.load_state_dict(state)
    net.requires_grad_(False).eval()
    net64 = copy.deepcopy(net).double().to(device)
    net64.semantic_model.set_fused(False)
    rows = []
    for channels_last in (False, True):
        own = copy.deepcopy(net).to(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The one place that knows the network's settings: update it if they move.
            own.semantic_model.set_fused(True, channels_last)
            losses = {ab: TOPIQLoss(net=copy.deepcopy(own)).set_backbone_autocast(ab) for ab in (False, True)}
        for prec in PRECISIONS:
            loss = losses[prec.amp_backbone]
            variant = "fused, channels_last" if channels_last else "fused, contiguous"
            rows.append(Row("topiq_loss", variant, prec, with_autocast(loss, prec, device.type), with_autocast(loss.score, prec, device.type)))
    ref = build_reference_fr()
    if ref is None:
        return rows, net64, None
    ref.load_state_dict(state)
    ref = ref.requires_grad_(False).to(device)

    def ref_score(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return ref(p, t).reshape(-1)

    for prec in PRECISIONS:
        if not prec.amp_backbone:
            rows.append(Row("pyiqa CFANet", "reference", prec, with_autocast(lambda p, t: (1 - ref_score(p, t)).mean(), prec, device.type), with_autocast(ref_score, prec, device.type)))
    return rows, net64, ref_score


def run_tests(report: Report, budget: float, device: str) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", str(ROOT / "tests")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        report.failed = True
        report.header.append(f"CUDA tests (`pytest -k cuda`): TIMED OUT after {budget:.0f} s")
        return
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    summary = lines[-1].strip("= ") if lines else "no output"
    failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    report.failed |= proc.returncode not in (0, 5)  # 5: nothing collected
    note = "" if device == "cuda" else " (no CUDA here: expected to skip)"
    report.header.append(f"CUDA tests (`pytest -k cuda`, {time.monotonic() - t0:.0f} s): {summary}{note}")
    report.header.extend(f"- {ln[:200]}" for ln in failures)


def one_step(row: Row, pred: torch.Tensor, target: torch.Tensor) -> float:
    p = pred.clone().requires_grad_(True)
    if p.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    row.step(p, target).backward()
    if p.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_bench(report: Report, rows: list[Row], shapes: list[str], args: argparse.Namespace, device: torch.device) -> None:
    deadline = time.monotonic() + args.budget_bench
    for shape in shapes:
        n, size = (int(v) for v in shape.split("x"))
        g = torch.Generator().manual_seed(size)
        target = torch.rand(n, 3, size, size, generator=g)
        pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
        pred, target = pred.to(device), target.to(device)
        for row in rows:
            if time.monotonic() > deadline:
                return
            try:
                with tf32(row.prec.tf32):
                    for _ in range(args.warmup):
                        one_step(row, pred, target)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                        base = torch.cuda.memory_allocated()
                    times = [one_step(row, pred, target)]
                    while len(times) < args.repeats and time.monotonic() < deadline:
                        times.append(one_step(row, pred, target))
                row.cells[f"ms {shape}"] = f"{statistics.median(times) * 1e3:.1f}" + ("" if len(times) == args.repeats else f" ({len(times)} runs)")
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else None
                row.cells[f"peak MiB {shape}"] = f"{peak:.0f}" if peak is not None else "n/a"
            except Exception as exc:  # one broken row must not stop the check
                report.error(row, f"ms {shape}", exc)
                row.cells[f"peak MiB {shape}"] = "-"
                if device.type == "cuda":
                    torch.cuda.empty_cache()


def run_accuracy(report: Report, rows: list[Row], net64: torch.nn.Module, ref_score: Fn | None, args: argparse.Namespace, device: torch.device) -> None:
    from accuracy_cases import CASE_MAX, GEOMEAN_MAX, contract_cases, geomean, rel_error, score_and_grad

    deadline = time.monotonic() + args.budget_accuracy
    cases = contract_cases(with_photos=not args.quick)
    cases = [c for c in cases if max(c[1].shape[-2:]) <= 64][:2] if args.quick else cases
    for _, dist, ref in cases:
        if time.monotonic() > deadline:
            break
        dist, ref = dist.to(device), ref.to(device)
        _, g64 = score_and_grad(lambda d, r: net64(d, r), dist.double(), ref.double())
        with torch.no_grad(), tf32(False):
            s_ref = ref_score(dist, ref).double() if ref_score is not None else None
        for row in rows:
            try:
                with tf32(row.prec.tf32):
                    s, g = score_and_grad(row.score, dist, ref)
                row.errs.append(rel_error(g, g64))
                if s_ref is not None:
                    row.dscore = max(row.dscore, (s.double() - s_ref).abs().max().item())
            except Exception as exc:
                report.error(row, "grad err geomean", exc)
                row.cells.update(dict.fromkeys(("grad err max", "cases", "max abs score diff vs pyiqa fp32", "contract"), "-"))
    for row in rows:
        if row.errs and "grad err geomean" not in row.cells:
            gm, mx = geomean(row.errs), max(row.errs)
            row.cells.update({"grad err geomean": f"{gm:.2e}", "grad err max": f"{mx:.2e}", "cases": f"{len(row.errs)}/{len(cases)}"})
            row.cells["max abs score diff vs pyiqa fp32"] = f"{row.dscore:.1e}" if ref_score is not None else "n/a (no pyiqa)"
            row.cells["contract"] = "yes" if gm <= GEOMEAN_MAX and mx <= CASE_MAX else "no"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --quick: a dry run)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 2 accuracy cases, 1 repeat: tests the script")
    ap.add_argument("--shapes", nargs="+", help="BATCHxSIZE (default 8x256 2x512; --quick: 1x32 1x48)")
    ap.add_argument("--repeats", type=int, help="timed steps per row (median); default 10, --quick 1")
    ap.add_argument("--warmup", type=int, help="untimed steps per row first; default 3, --quick 1")
    ap.add_argument("--skip-tests", action="store_true", help="leave out the CUDA tests")
    ap.add_argument("--budget-tests", type=float, default=150.0, help="seconds for the CUDA tests")
    ap.add_argument("--budget-bench", type=float, default=180.0, help="seconds for the benchmark")
    ap.add_argument("--budget-accuracy", type=float, default=90.0, help="seconds for the accuracy rows")
    ap.add_argument("--max-seconds", type=float, default=470.0, help="hard limit: print what is there and exit 3")
    ap.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing to check (dry run: --device cpu --quick)")
        return 0
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    shapes = args.shapes or (["1x32", "1x48"] if args.quick else ["8x256", "2x512"])
    args.repeats = args.repeats or (1 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    start = time.monotonic()
    report = Report(shapes=shapes)

    def finish() -> str:
        text = report.render()
        if args.out:
            args.out.write_text(text + "\n")
        return text

    def abort() -> None:
        report.notes.append(f"ABORTED: hard limit of {args.max_seconds:.0f} s reached; rows left blank were not run")
        print(finish(), flush=True)
        os._exit(3)

    watchdog = threading.Timer(args.max_seconds, abort)
    watchdog.daemon = True
    watchdog.start()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads (dry run)"
    versions = f"torch {torch.__version__}" + (f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if device.type == "cuda" else "")
    flags = f"matmul TF32 {torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}"
    report.header += [f"## GPU check: {where}; {versions}", "", "Weights: seeded random (tests/seeded_weights.py), not a trained checkpoint."]
    if not args.skip_tests:
        run_tests(report, args.budget_tests, device.type)
    rows, net64, ref_score = build(device)
    report.rows = rows
    run_bench(report, rows, shapes, args, device)
    run_accuracy(report, rows, net64, ref_score, args, device)
    watchdog.cancel()
    report.header += [
        f"Speed: forward+backward with `pred` requiring grad, median of {args.repeats} after {args.warmup} warm-up; "
        "peak MiB: `max_memory_allocated` during the timed steps minus what was allocated before (weights, inputs). "
        f"Autocast rows wrap the forward only and use the TF32 flags as found ({flags}). "
        "Accuracy: input-gradient relative L2 error against the float64 network (unfused) per case; "
        f"contract: geomean <= 5e-3 and no case > 1e-1. Total {time.monotonic() - start:.0f} s.",
    ]
    print(finish())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
