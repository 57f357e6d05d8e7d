"""Speed and memory of forward+backward, side by side in one run.

Rows: this package (default fused backbone; the unfused official modules; checkpointing;
a cached target; under autocast on CUDA), pyiqa's reference CFANet on the same (random)
weights, LPIPS-VGG (random weights, timing only) and two lower bounds: "ResNet50 forward on
2N images + backward on N" as torchvision runs it, and the same with BatchNorm folded and
channels-last (the *fast bound*: what a frozen ResNet50 feature loss cannot beat here).

FLOPs: counted by ``torch.utils.flop_counter`` (convolutions, matmuls, attention; forward
and backward), a figure no machine noise moves.

Memory: on CUDA, peak allocated bytes during forward+backward; on every device,
the bytes autograd saved for backward (activations, counted once per storage,
weights excluded), which is what checkpointing reduces.

    python benchmarks/bench_loss.py                      # 4x3x256x256 and 2x3x512x512
    python benchmarks/bench_loss.py --shapes 8x128 --repeats 3 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from topiq_loss import CFANetFR, TOPIQLoss  # noqa: E402
from topiq_loss.models.backbone import ResNet50Features  # noqa: E402

#: Shapes of the backbone's parameters (see saved_bytes).
WEIGHT_SHAPES = {tuple(p.shape) for p in ResNet50Features().parameters()}

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def saved_bytes(step: Step, pred: torch.Tensor, target: torch.Tensor, params: set[int]) -> int:
    """Bytes of tensors autograd saves for backward (unique storages, no weights).

    Weights are the storages in ``params`` and, since the backbone folds BatchNorm at
    each call, saved tensors without a graph whose shape is a parameter's (the folded
    weights: constant, about 94 MB, not activations)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if not t.requires_grad and tuple(t.shape) in WEIGHT_SHAPES:
            return t
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # opaque tensors (mkldnn) have no storage
            return t
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    p = pred.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step(p, target)
    out.backward()
    return sum(seen.values())


def count_flops(step: Step, pred: torch.Tensor, target: torch.Tensor) -> float:
    """FLOPs of one forward+backward as torch's FlopCounterMode counts them (matmul/conv/attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    p = pred.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        step(p, target).backward()
    return float(counter.get_total_flops())


def run_once(step: Step, pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float | None]:
    """Seconds for one forward+backward, and the CUDA peak bytes above the start (else None)."""
    cuda = pred.is_cuda
    p = pred.clone().requires_grad_(True)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    step(p, target).backward()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return elapsed, (torch.cuda.max_memory_allocated() - base) if cuda else None


def time_rows(
    rows: list[tuple[str, Step, set[int]]], pred: torch.Tensor, target: torch.Tensor, repeats: int
) -> list[tuple[float, float | None]]:
    """Median time and peak memory per row.

    The rows take turns (round robin) rather than running back to back, so that a
    slow spell on a shared machine hits every row alike.
    """
    for label, step, _ in rows:  # warm-up (and compilation)
        first, _ = run_once(step, pred, target)
        if "compile" in label:
            print(f"# {label}: first call (compilation) {first:.1f} s", flush=True)
    times: list[list[float]] = [[] for _ in rows]
    peaks: list[float | None] = [None for _ in rows]
    for _ in range(repeats):
        for i, (_, step, _) in enumerate(rows):
            t, peaks[i] = run_once(step, pred, target)
            times[i].append(t)
    return [(statistics.median(t), pk) for t, pk in zip(times, peaks, strict=True)]


def build_rows(device: str, with_compile: bool) -> list[tuple[str, Step, set[int]]]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = TOPIQLoss(weights=None).to(device)
    state = loss.net.state_dict()
    ptrs = lambda m: {p.untyped_storage().data_ptr() for p in m.state_dict(keep_vars=True).values()}  # noqa: E731
    rows: list[tuple[str, Step, set[int]]] = []
    rows.append(("topiq_loss fp32 (default: fused)", lambda p, t: loss(p, t), ptrs(loss.net)))
    published = TOPIQLoss(net=loss.net, objective="score")
    rows.append(("topiq_loss fp32 objective=score", lambda p, t: published(p, t), ptrs(loss.net)))
    ref_net = CFANetFR()
    ref_net.load_state_dict(state)
    ref_net.semantic_model.set_fused(False)
    plain = TOPIQLoss(net=ref_net.requires_grad_(False)).to(device)
    rows.append(("topiq_loss fp32 set_fused(False)", lambda p, t: plain(p, t), ptrs(plain.net)))
    ck = TOPIQLoss(net=copy.deepcopy(loss.net)).set_grad_checkpointing()
    rows.append(("topiq_loss fp32 checkpoint", lambda p, t: ck(p, t), ptrs(loss.net)))
    fixed: dict[int, object] = {}

    def with_target(p, t):
        # The target's features are computed once per target (as in image optimisation).
        key = id(t)
        if key not in fixed:
            fixed.clear()
            fixed[key] = loss.with_target(t)
        return fixed[key](p)

    rows.append(("topiq_loss fp32 with_target (cached)", with_target, ptrs(loss.net)))
    if device == "cuda":
        def amp(p, t, fn=loss):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return fn(p, t)
        rows.append(("topiq_loss autocast bf16 (fp32 backbone)", amp, ptrs(loss.net)))
        amp_bb = TOPIQLoss(net=copy.deepcopy(loss.net)).set_backbone_autocast()
        rows.append(("topiq_loss autocast bf16 backbone autocast", lambda p, t: amp(p, t, amp_bb), ptrs(loss.net)))
    if with_compile:
        comp = torch.compile(loss)
        rows.append(("topiq_loss fp32 torch.compile", lambda p, t: comp(p, t), ptrs(loss.net)))

    from pyiqa_oracle import build_reference_fr

    ref = build_reference_fr()
    if ref is not None:
        ref.load_state_dict(state)
        ref = ref.to(device).requires_grad_(False)
        rows.append(("pyiqa CFANet (reference)", lambda p, t: (1 - ref(p, t)).mean(), ptrs(ref)))
    else:
        print("# pyiqa not installed: reference row skipped", file=sys.stderr)
    try:
        import lpips

        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            lp = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False).to(device).eval()
        lp.requires_grad_(False)
        rows.append(("lpips VGG (random weights)", lambda p, t: lp(p, t, normalize=True).mean(), ptrs(lp)))
    except ImportError:
        print("# lpips not installed: lpips row skipped", file=sys.stderr)

    def bound_of(bb: ResNet50Features) -> Step:
        def bound(p, t):
            with torch.no_grad():
                bb(t)
            return sum(f.mean() for f in bb(p))

        return bound

    plain_bb = ResNet50Features().set_fused(False).to(device).requires_grad_(False)
    rows.append(("bound: ResNet50 fwd 2N + bwd N", bound_of(plain_bb), ptrs(plain_bb)))
    fast_bb = ResNet50Features().to(device).requires_grad_(False)
    rows.append(("fast bound: same, BN folded, channels-last", bound_of(fast_bb), ptrs(fast_bb)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["4x256", "2x512"], help="BATCHxSIZE, e.g. 4x256")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (median), after 1 warm-up")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile (inductor) row")
    ap.add_argument("--only", nargs="+", default=None, help="keep the rows whose label contains one of these")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# torch {torch.__version__}, {name}; forward+backward, median of {args.repeats} (rows in turn)")
    rows = build_rows(dev.type, args.compile)
    if args.only:
        # The fast bound stays last: the "x fast bound" column divides by it.
        rows = [r for r in rows[:-1] if any(k in r[0] for k in args.only)] + rows[-1:]
    for shape in args.shapes:
        batch, size = (int(v) for v in shape.split("x"))
        g = torch.Generator().manual_seed(size)
        target = torch.rand(batch, 3, size, size, generator=g).to(dev)
        pred = (target + 0.05 * torch.randn(target.shape, generator=g).to(dev)).clamp(0, 1)
        timed = time_rows(rows, pred, target, args.repeats)
        results = [
            (label, t, peak, saved_bytes(step, pred, target, params), count_flops(step, pred, target))
            for (label, step, params), (t, peak) in zip(rows, timed, strict=True)
        ]
        ref_t = next((r[1] for r in results if r[0].startswith("pyiqa")), None)
        bound_t, bound_f = results[-1][1], results[-1][4]  # the fast bound
        plain_t = results[0][1]
        print(f"\n## {batch} x 3 x {size} x {size}")
        print(
            f"| {'variant':<42} | {'ms':>8} | {'x pyiqa':>7} | {'x fast bound':>12} | {'x default':>9} "
            f"| {'GFLOP':>6} | {'FLOP x bound':>12} | {'saved MiB':>9} | {'peak MiB':>8} |"
        )
        print(f"|{'-' * 44}|{'-' * 10}|{'-' * 9}|{'-' * 14}|{'-' * 11}|{'-' * 8}|{'-' * 14}|{'-' * 11}|{'-' * 10}|")
        for label, t, peak, saved, flops in results:
            rp = f"{t / ref_t:.2f}" if ref_t else "n/a"
            pk = f"{peak / 2**20:.0f}" if peak is not None else "n/a"
            print(
                f"| {label:<42} | {t * 1e3:>8.0f} | {rp:>7} | {t / bound_t:>12.2f} | {t / plain_t:>9.2f} "
                f"| {flops / 1e9:>6.1f} | {flops / bound_f:>12.2f} | {saved / 2**20:>9.0f} | {pk:>8} |"
            )
        # The issue-31 figures: the anchored default against the published-score step.
        score = next((r for r in results if r[0].endswith("objective=score")), None)
        if score:
            score_t, score_f, plain_f = score[1], score[4], results[0][4]
            print(f"\nanchored / score step: {plain_t / score_t:.3f}; default / fast bound: {plain_t / bound_t:.3f}"
                  + (f"; default / pyiqa: {plain_t / ref_t:.3f}" if ref_t else ""))
            # FLOPs are counted, not timed: the part of each ratio that no machine noise moves
            # and no scheduling removes (see docs/performance.md, "Where the floor is").
            print(f"the same in FLOPs: anchored / score {plain_f / score_f:.3f}; default / fast bound {plain_f / bound_f:.3f}; "
                  f"score / fast bound {score_f / bound_f:.3f}")


if __name__ == "__main__":
    main()
