"""Where one default ``TOPIQLoss`` step spends its time: backbone, fronts per level,
attention head, anchor, backward; and the op categories of the whole step.

    python benchmarks/profile_step.py                 # 4x3x256x256, median of 5
    python benchmarks/profile_step.py --shape 2x512 --repeats 3

Each stage is timed by calling the network's own pieces in the order the loss calls
them (same tensors, same grad modes), median over repeats; then torch.profiler gives
the self CPU time of one step by op category (convolution, matmul/attention,
elementwise, pooling, ...).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import defaultdict

import torch

from topiq_loss import TOPIQLoss
from topiq_loss.functional.objectives import anchored_penalty
from topiq_loss.models.cfanet_fr import _glp_reduce
from topiq_loss.models.trunk import map_levels

LEVELS = ("stem", "layer1", "layer2", "layer3", "layer4")

CATEGORIES = {
    "convolution": ("conv", "mkldnn_convolution"),
    "matmul / attention": ("addmm", "mm", "bmm", "matmul", "linear", "scaled_dot_product", "_flash", "baddbmm"),
    "pooling": ("pool",),
    "gelu / sigmoid": ("gelu", "sigmoid"),
    "layer norm / softmax": ("layer_norm", "softmax"),
}
CATEGORIES_ORDER = [*CATEGORIES, "elementwise, copies and the rest"]


def category(name: str) -> str:
    low = name.lower()
    for cat, keys in CATEGORIES.items():
        if any(k in low for k in keys):
            return cat
    return "elementwise, copies and the rest"


def staged_step(loss: TOPIQLoss, pred: torch.Tensor, target: torch.Tensor, times: dict[str, list[float]]) -> None:
    """One default step, stage by stage, appending each stage's seconds to ``times``."""
    net = loss.net

    def tick(label: str, t0: float) -> float:
        t1 = time.perf_counter()
        times[label].append(t1 - t0)
        return t1

    t = time.perf_counter()
    p = pred.clone().requires_grad_(True)
    feats_p = net.backbone_features(p)
    t = tick("backbone forward, pred (graph)", t)
    with torch.no_grad():
        feats_t = net.backbone_features(target)
        t = tick("backbone forward, target (no graph)", t)
        anchor = net.anchor_head(feats_t).score if hasattr(net, "anchor_head") else net.head(feats_t, feats_t).score
        t = tick("anchor head forward (no graph)", t)
    size = (feats_p[-1].shape[-2], feats_p[-1].shape[-1])
    reduced, gates = [], []
    for i, name in enumerate(LEVELS):
        r, g = map_levels(_glp_reduce, (feats_p[i], feats_t[i]), (net.weight_pool[i], net.dim_reduce[i]), size, False)
        reduced.append(r)
        gates.append(g)
        t = tick(f"score front forward, {name}", t)
    score = net.attend(reduced, gates).score
    t = tick("score attention + MLP forward", t)
    out = anchored_penalty(anchor - score).mean()
    out.backward()
    tick("backward (all)", t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="4x256", help="BATCHxSIZE")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    batch, size = (int(v) for v in args.shape.split("x"))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = TOPIQLoss(weights=None)
    g = torch.Generator().manual_seed(size)
    target = torch.rand(batch, 3, size, size, generator=g)
    pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    times: dict[str, list[float]] = defaultdict(list)
    staged_step(loss, pred, target, defaultdict(list))  # warm-up
    for _ in range(args.repeats):
        staged_step(loss, pred, target, times)
    total = sum(statistics.median(v) for v in times.values())
    print(f"# torch {torch.__version__}, CPU {torch.get_num_threads()} threads, {batch}x3x{size}x{size}, "
          f"median of {args.repeats}")
    print("| stage | ms | share |\n|---|---|---|")
    for label, v in times.items():
        m = statistics.median(v)
        print(f"| {label} | {m * 1e3:.1f} | {m / total:.1%} |")
    print(f"| sum | {total * 1e3:.1f} | 100% |")

    from torch.profiler import ProfilerActivity, profile

    from topiq_loss.models.backbone import ResNet50Features

    score_loss = TOPIQLoss(net=loss.net, objective="score")
    bound_bb = ResNet50Features().requires_grad_(False)

    def bound(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # bench_loss.py's fast bound: ResNet50 forward on 2N images, backward on N.
        with torch.no_grad():
            bound_bb(t)
        return sum(f.mean() for f in bound_bb(p))  # type: ignore[return-value]

    steps = {"default": loss, "score": score_loss, "fast bound": bound}
    # Self CPU time by category, median over profiled runs taken in turn.
    per_run: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in steps}
    tops = {}
    for rep in range(1 + args.repeats):
        for name, fn in steps.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                p = pred.clone().requires_grad_(True)
                fn(p, target).backward()
            if rep == 0:
                continue  # warm-up
            cats: dict[str, float] = defaultdict(float)
            for ev in prof.key_averages():
                cats[category(ev.key)] += ev.self_cpu_time_total / 1e3
            for cat in CATEGORIES_ORDER:
                per_run[name][cat].append(cats.get(cat, 0.0))
            tops[name] = prof
    med = {k: {c: statistics.median(v[c]) for c in CATEGORIES_ORDER} for k, v in per_run.items()}
    print(f"\n| op category (self CPU ms, forward + backward, median of {args.repeats}) | default | score | fast bound "
          "| default - bound | score - bound |\n|---|---|---|---|---|---|")
    totals = {k: sum(v.values()) for k, v in med.items()}
    for cat in CATEGORIES_ORDER:
        d, sc, b = med["default"][cat], med["score"][cat], med["fast bound"][cat]
        print(f"| {cat} | {d:.1f} | {sc:.1f} | {b:.1f} | {d - b:+.1f} | {sc - b:+.1f} |")
    d, sc, b = totals["default"], totals["score"], totals["fast bound"]
    print(f"| **all** | {d:.1f} | {sc:.1f} | {b:.1f} | {d - b:+.1f} | {sc - b:+.1f} |")
    print(f"\nratios of self CPU time: default / bound {d / b:.3f}, score / bound {sc / b:.3f}, default / score {d / sc:.3f}")
    print("\ntop ops of the default step:")
    print(tops["default"].key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
