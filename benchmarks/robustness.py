"""How much an adversary gains against the plain and the robust (ensemble) TOPIQ-FR score.

On degraded crops of real photographs (scikit-image's chelsea and coffee, blurred and
noisy), an l_inf PGD attack of budget eps perturbs the degraded image to *raise* its
score against the clean reference, without making it closer to it:

(a) PGD on the plain score, and the same perturbation scored by the ensemble
    (transfer);
(b) PGD with expectation over transforms on the ensemble itself
    (``robust_samples`` per step), judged on fresh transforms;
(c) the cost of a robust training step (robust_samples=1) against a plain one.

Targets: (b)'s gain <= 0.25x the plain attack's gain on the plain score at every eps;
(c) <= 1.15x. Gains are score differences averaged over the images. Seeded, untrained
weights by default (the attack works on any weights; `--weights kadid` uses the
official file where it is cached or downloadable).

    python benchmarks/robustness.py
    python benchmarks/robustness.py --steps 40 --eot 8 --weights kadid
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples"))

from topiq_loss import CFANetFR, RandomTransforms, TOPIQLoss  # noqa: E402


def photos(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, reference) crops, (2, 3, size, size)."""
    import _common as C
    import kornia

    ref = torch.cat([C.centre_crop(C.photo(n), size) for n in ("chelsea", "coffee")])
    g = torch.Generator().manual_seed(0)
    blurred = kornia.filters.gaussian_blur2d(ref, (7, 7), (1.2, 1.2))
    return (blurred + 0.03 * torch.randn(ref.shape, generator=g)).clamp(0, 1), ref


def pgd(score, x0: torch.Tensor, ref: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """Maximise ``score(x, ref).sum()`` over ||x - x0||_inf <= eps, x in [0, 1]."""
    x = x0.clone()
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(score(x, ref).sum(), x)
        with torch.no_grad():
            x = x0 + (x + alpha * g.sign() - x0).clamp(-eps, eps)
            x = x.clamp(0, 1)
    return x.detach()


def ensemble_eval(net: CFANetFR, x: torch.Tensor, ref: torch.Tensor, samples: int, seed: int) -> torch.Tensor:
    """The ensemble score on fixed fresh draws (same draws for every x with one seed)."""
    judge = TOPIQLoss(net=net, robust=RandomTransforms(samples=samples, generator=torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        return judge.score(x, ref)


def step_cost(net: CFANetFR, size: int, repeats: int) -> tuple[float, float]:
    plain = TOPIQLoss(net=net)
    robust = TOPIQLoss(net=net, robust=RandomTransforms(generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(1)
    target = torch.rand(4, 3, size, size, generator=g)
    pred = (target + 0.05 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    times: dict[str, list[float]] = {"plain": [], "robust": []}
    for i in range(repeats + 1):
        for name, fn in (("plain", plain), ("robust", robust)):
            p = pred.clone().requires_grad_(True)
            t0 = time.perf_counter()
            fn(p, target).backward()
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    return statistics.median(times["plain"]), statistics.median(times["robust"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="seeded", help="seeded (untrained, default) | kadid | pipal | PATH")
    ap.add_argument("--size", type=int, default=192, help="crop size (default 192)")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps (default 20)")
    ap.add_argument("--eot", type=int, default=4, help="transforms per step of the ensemble attack (default 4)")
    ap.add_argument("--judge", type=int, default=16, help="fresh transforms to judge the ensemble (default 16)")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per row for (c) (default 5)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    if args.weights == "seeded":
        from seeded_weights import seeded_state_dict

        net = CFANetFR()
        net.load_state_dict(seeded_state_dict(net.state_dict()))
        net.requires_grad_(False).eval()
        label = "seeded untrained weights"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = TOPIQLoss(weights=args.weights).net
        label = f"weights {args.weights}"
    x0, ref = photos(args.size)
    plain = TOPIQLoss(net=net)
    print(f"# {label}; 2 photos {args.size}px; PGD {args.steps} steps; EOT {args.eot}; judged on {args.judge} fresh draws")
    base_plain = plain.score(x0, ref).detach()
    base_ens = ensemble_eval(net, x0, ref, args.judge, seed=123)
    print(f"# degraded: plain score {base_plain.mean():.4f}, ensemble score {base_ens.mean():.4f}")
    print(
        f"| {'eps':>5} | {'(a) plain attack on plain':>25} | {'(a) transfer to ensemble':>24} "
        f"| {'(b) EOT attack on ensemble':>26} | {'(b) / (a)':>9} |"
    )
    print(f"|{'-' * 7}|{'-' * 27}|{'-' * 26}|{'-' * 28}|{'-' * 11}|")
    for k in (2, 4, 8):
        eps = k / 255
        x_a = pgd(lambda x, r: plain.score(x, r), x0, ref, eps, args.steps)
        gain_a = (plain.score(x_a, ref).detach() - base_plain).mean().item()
        transfer = (ensemble_eval(net, x_a, ref, args.judge, seed=123) - base_ens).mean().item()
        attacker = TOPIQLoss(net=net, robust=RandomTransforms(samples=args.eot, generator=torch.Generator().manual_seed(k)))
        x_b = pgd(lambda x, r, a=attacker: a.score(x, r), x0, ref, eps, args.steps)
        gain_b = (ensemble_eval(net, x_b, ref, args.judge, seed=123) - base_ens).mean().item()
        ratio = gain_b / gain_a if gain_a > 0 else float("nan")
        print(f"| {k:>3}/255 | {gain_a:>+25.4f} | {transfer:>+24.4f} | {gain_b:>+26.4f} | {ratio:>9.2f} |", flush=True)
    t_plain, t_robust = step_cost(net, 256, args.repeats)
    print(
        f"\n(c) 4x3x256x256 forward+backward, median of {args.repeats}: plain {t_plain * 1e3:.0f} ms, "
        f"robust (robust_samples=1) {t_robust * 1e3:.0f} ms, ratio {t_robust / t_plain:.2f}"
    )


if __name__ == "__main__":
    main()
