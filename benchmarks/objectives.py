"""Which objective makes TOPIQ a good training loss: the published score, or the anchored deficit.

Three measurements, each printed as a Markdown table:

1. ``pixels``: from blurred, noisy and JPEG-compressed crops of three photographs, the
   pixels are optimised with Adam for ``L1 + lambda * loss`` (lambda in 0.01, 0.1, 1,
   objective ``score`` or ``anchored``; and L1 alone). Columns: PSNR and SSIM against
   the reference, the TOPIQ score and the robust ensemble score (fresh, fixed draws).
   A ``drift`` row starts *at* the reference and minimises the loss alone.
2. ``sr``: a small x2 super-resolution network fine-tuned for ``--sr-steps`` with the
   same mixtures, PSNR on a held-out photograph.
3. ``--rho``: the anchored penalty's shape and width (Charbonnier at three widths,
   Huber, square): drift from a near-target start, L1 + 0.1 * loss from blur, and the
   gradient's size relative to the score objective's at the blurred start.
4. ``--networks K``: the blur row of the pixel table for K seeded random networks and K
   networks as torch initialises them (seeded, random BatchNorm statistics), with
   what decides it: the size of each network's gradient, the deficit it sees at the
   blurred start, and the cosine between the TOPIQ term's descent direction and the way
   back to the reference (``ref - start``). A term that points back (cosine > 0) helps
   L1; one orthogonal to it only perturbs L1's path, by an amount set by lambda times the
   gradient's size. The same columns with ``--weights kadid`` show where a trained
   network stands.

With the default seeded *random* weights the TOPIQ columns mean nothing (the table says
so): the run exists for fidelity (PSNR, SSIM) and drift. With the official weights
(cached, or downloadable on your machine)::

    python benchmarks/objectives.py --weights kadid --steps 100 --size 128
    python benchmarks/objectives.py --rho
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples"))

import _common as C  # noqa: E402

from topiq_loss import CFANetFR, RandomTransforms, TOPIQLoss, pixel_loss  # noqa: E402
from topiq_loss.functional.fr import prepare_pair  # noqa: E402
from topiq_loss.functional.objectives import anchored_penalty  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee")
LAMBDAS = (0.01, 0.1, 1.0)
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    out = []
    for img in x:
        arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        dec = torch.from_numpy(np.array(Image.open(buf))).float().div(255)
        out.append(dec.permute(2, 0, 1))
    return torch.stack(out)


def starts(ref: torch.Tensor) -> dict[str, torch.Tensor]:
    import kornia

    g = torch.Generator().manual_seed(0)
    return {
        "blur": kornia.filters.gaussian_blur2d(ref, (9, 9), (1.5, 1.5)),
        "noise": (ref + 0.05 * torch.randn(ref.shape, generator=g)).clamp(0, 1),
        "jpeg": jpeg(ref, 20),
    }


def optimise(x0: torch.Tensor, ref: torch.Tensor, loss: Loss, lam: float, l1: bool, steps: int, lr: float) -> torch.Tensor:
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        total = lam * loss(x, ref)
        if l1:
            total = total + pixel_loss(x, ref)
        total.backward()
        opt.step()
    return x.detach().clamp(0, 1)


def columns(x: torch.Tensor, ref: torch.Tensor, plain: TOPIQLoss, robust: TOPIQLoss) -> list[float]:
    with torch.no_grad():
        robust.generator.manual_seed(1234)  # the same fresh draws for every row
        return [C.psnr(x, ref), C.ssim(x, ref), plain.score(x, ref).mean().item(), robust.score(x, ref).mean().item()]


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")


def pixels_table(refs: torch.Tensor, losses: dict[str, TOPIQLoss], robust: TOPIQLoss, args: argparse.Namespace) -> None:
    plain = losses["anchored"]
    runs: list[tuple[str, str | None, float]] = [("L1 alone", None, 0.0)]
    runs += [(f"L1 + {lam} * {obj}", obj, lam) for obj in ("score", "anchored") for lam in args.lambdas]
    rows = []
    for label, obj, lam in runs:
        per_start: dict[str, list[list[float]]] = {}
        for i in range(refs.shape[0]):
            ref = refs[i : i + 1]
            for kind, x0 in starts(ref).items():
                x = optimise(x0, ref, losses[obj or "anchored"], lam, True, args.steps, args.lr)
                per_start.setdefault(kind, []).append(columns(x, ref, plain, robust))
        for kind, vals in per_start.items():
            rows.append([label, kind, *[statistics.fmean(v[j] for v in vals) for j in range(4)]])
    for obj in ("score", "anchored"):
        vals = []
        for i in range(refs.shape[0]):
            ref = refs[i : i + 1]
            x = optimise(ref, ref, losses[obj], 1.0, False, 30, 2e-3)
            vals.append(columns(x, ref, plain, robust))
        rows.append([f"drift: {obj} alone, 30 Adam steps from the target", "-", *[statistics.fmean(v[j] for v in vals) for j in range(4)]])
    table(
        f"Pixel optimisation ({args.steps} Adam steps, lr {args.lr}, {refs.shape[0]} photos, {args.size} px; mean)",
        ["objective", "start", "PSNR dB", "SSIM", "TOPIQ", "robust TOPIQ"],
        rows,
    )


class TinySR(nn.Module):
    """Bicubic x2 plus a learned 3-layer residual: enough to show what a loss pulls towards."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(32, 3, 3, padding=1))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
        return up + self.body(up)


def sr_table(losses: dict[str, TOPIQLoss], robust: TOPIQLoss, args: argparse.Namespace) -> None:
    photos = [C.photo(n) for n in PHOTOS]
    train = [p[..., : p.shape[-1] // 2] for p in photos]
    test = torch.cat([C.centre_crop(p[..., p.shape[-1] // 2 :], args.size) for p in photos])
    test_lr = F.avg_pool2d(test, 2)
    rows = []
    for obj, lam in [(None, 0.0)] + [(o, lam) for o in ("score", "anchored") for lam in args.lambdas]:
        torch.manual_seed(0)
        model = TinySR()
        opt = torch.optim.Adam(model.parameters(), lr=2e-4)
        gen = torch.Generator().manual_seed(0)
        for _ in range(args.sr_steps):
            hr = C.random_patches(train, 64, 4, gen)
            sr = model(F.avg_pool2d(hr, 2))
            total = pixel_loss(sr, hr)
            if obj is not None:
                total = total + lam * losses[obj](sr, hr)
            opt.zero_grad()
            total.backward()
            opt.step()
        with torch.no_grad():
            out = model(test_lr).clamp(0, 1)
        label = "L1 alone" if obj is None else f"L1 + {lam} * {obj}"
        rows.append([label, *columns(out, test, losses["anchored"], robust)])
    table(
        f"x2 SR fine-tune ({args.sr_steps} steps, batch 4, 64 px patches; held-out halves, {args.size} px)",
        ["objective", "PSNR dB", "SSIM", "TOPIQ", "robust TOPIQ"],
        rows,
    )


def rho_table(refs: torch.Tensor, net: CFANetFR, args: argparse.Namespace) -> None:
    penalties: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "charbonnier eps=1e-3": lambda d: anchored_penalty(d, 1e-3),
        "charbonnier eps=1e-2": lambda d: anchored_penalty(d, 1e-2),
        "charbonnier eps=1e-1": lambda d: anchored_penalty(d, 1e-1),
        "huber delta=1e-2": lambda d: F.huber_loss(d, torch.zeros_like(d), reduction="none", delta=1e-2),
        "square": lambda d: d.square(),
    }

    def anchored(rho: Callable[[torch.Tensor], torch.Tensor]) -> Loss:
        def loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            score, anchor = net.score_and_anchor(*prepare_pair(p, t, net))
            return rho(anchor - score).mean()

        return loss

    def score_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (1 - net(*prepare_pair(p, t, net))).mean()

    rows = []
    for name, rho in penalties.items():
        fn = anchored(rho)
        drift, fid, ratio = [], [], []
        for i in range(refs.shape[0]):
            ref = refs[i : i + 1]
            g = torch.Generator().manual_seed(i)
            near = (ref + 0.01 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
            drift.append(C.psnr(optimise(near, ref, fn, 1.0, False, 30, 2e-3), ref) - C.psnr(near, ref))
            blur = starts(ref)["blur"]
            fid.append(C.psnr(optimise(blur, ref, fn, 0.1, True, args.steps, args.lr), ref))
            x = blur.clone().requires_grad_(True)
            (ga,) = torch.autograd.grad(fn(x, ref), x)
            (gs,) = torch.autograd.grad(score_loss(x, ref), x)
            ratio.append((ga.norm() / gs.norm()).item())
        rows.append([name, statistics.fmean(drift), statistics.fmean(fid), statistics.fmean(ratio)])
    l1 = statistics.fmean(
        C.psnr(optimise(starts(refs[i : i + 1])["blur"], refs[i : i + 1], score_loss, 0.0, True, args.steps, args.lr), refs[i : i + 1])
        for i in range(refs.shape[0])
    )
    rows.append(["(L1 alone)", "-", l1, "-"])
    table(
        "Anchored penalty: shape and width",
        ["rho", "PSNR change, 30 steps from target + noise 0.01 (dB)", "L1 + 0.1 * loss from blur (dB)",
         "|grad| / |grad of score objective| at blur"],
        rows,
    )


def torch_init_state(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A CFANet-FR as torch initialises it (seeded), with non-trivial BatchNorm statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = CFANetFR().state_dict()
    g = torch.Generator().manual_seed(seed)
    for key in state:
        if key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(state[key].shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(state[key].shape, generator=g)
    assert state.keys() == template.keys()
    return state


def networks_table(refs: torch.Tensor, net: CFANetFR, losses: dict[str, TOPIQLoss], args: argparse.Namespace) -> None:
    from seeded_weights import seeded_state_dict

    template = {k: v.clone() for k, v in net.state_dict().items()}
    pairs = [(refs[i : i + 1], starts(refs[i : i + 1])["blur"]) for i in range(refs.shape[0])]
    l1 = statistics.fmean(C.psnr(optimise(x0, ref, losses["score"], 0.0, True, args.steps, args.lr), ref) for ref, x0 in pairs)
    # Two families of random networks: the tests' seeded weights, and torch's own init.
    draws = [(f"seeded {k}", lambda k=k: seeded_state_dict(template, seed=k)) for k in range(args.networks)]
    draws += [(f"torch init {k}", lambda k=k: torch_init_state(template, k)) for k in range(args.networks)]
    rows: list[list[object]] = []
    for name, state in draws:
        # In place: the losses hold this network and fold its current tensors at each call.
        net.load_state_dict(state(), strict=True)
        grad, deficit, cosine = [], [], []
        for ref, x0 in pairs:
            t = ref.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(losses["score"](t, ref), t)
            grad.append(g.norm().item())
            x = x0.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(losses["anchored"](x, ref), x)
            cosine.append(F.cosine_similarity(-g.flatten(), (ref - x0).flatten(), dim=0).item())
            with torch.no_grad():
                deficit.append((losses["anchored"].score(ref, ref) - losses["anchored"].score(x0, ref)).item())
        common = [name, statistics.fmean(grad), statistics.fmean(deficit), statistics.fmean(cosine)]
        for lam in args.lambdas:
            psnr = {
                obj: statistics.fmean(C.psnr(optimise(x0, ref, losses[obj], lam, True, args.steps, args.lr), ref) for ref, x0 in pairs)
                for obj in ("score", "anchored")
            }
            rows.append([*common, lam, psnr["score"], psnr["anchored"], psnr["anchored"] - l1])
    table(
        f"Blur start, L1 + lambda * loss, {2 * args.networks} random networks "
        f"({args.steps} Adam steps, lr {args.lr}, {refs.shape[0]} photos, {args.size} px; mean; L1 alone {l1:.2f} dB)",
        ["network", "grad norm of 1 - score at the target", "deficit at the start", "cos(descent of anchored, ref - start)",
         "lambda", "PSNR score (dB)", "PSNR anchored (dB)", "anchored - L1 alone (dB)"],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="registry name or path (default: seeded random weights)")
    parser.add_argument("--size", type=int, default=96, help="crop size (px)")
    parser.add_argument("--steps", type=int, default=40, help="Adam steps of the pixel optimisation")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--sr-steps", type=int, default=60)
    parser.add_argument("--rho", action="store_true", help="compare the anchored penalty's shape and width instead")
    parser.add_argument("--networks", type=int, default=0, metavar="K",
                        help="the blur row for 2K random networks instead (not with --weights)")
    parser.add_argument("--only", choices=("pixels", "sr"), default=None)
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS), help="weights of the TOPIQ term")
    args = parser.parse_args(argv)
    if args.networks and args.weights is not None:
        parser.error("--networks draws seeded random networks; it cannot be combined with --weights")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.weights is None:
        from seeded_weights import seeded_state_dict

        net = CFANetFR()
        net.load_state_dict(seeded_state_dict(net.state_dict()), strict=True)
        note = "seeded RANDOM weights: the TOPIQ columns mean nothing; PSNR, SSIM and drift do"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = TOPIQLoss(weights=args.weights).net
        note = f"weights {args.weights!r}"
    net.requires_grad_(False).eval()
    losses = {obj: TOPIQLoss(net=net, objective=obj) for obj in ("score", "anchored")}
    robust = TOPIQLoss(net=net, robust=RandomTransforms(samples=8, generator=torch.Generator()))
    refs = torch.cat([C.centre_crop(C.photo(n), args.size) for n in PHOTOS])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {note}")
    t0 = time.perf_counter()
    if args.networks:
        networks_table(refs, net, losses, args)
    elif args.rho:
        rho_table(refs, net, args)
    else:
        if args.only in (None, "pixels"):
            pixels_table(refs, losses, robust, args)
        if args.only in (None, "sr"):
            sr_table(losses, robust, args)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
