"""Train a small x2 super-resolution network on real photographs: L1 only vs L1 + TOPIQ.

Both runs start from the same initialisation and see the same patches; the only
difference is the loss. Training photos: scikit-image's astronaut, coffee and rocket;
test: a held-out crop of chelsea (the cat). Writes ``sr_loss_curves.png`` and
``sr_before_after.png`` to ``--out`` and prints PSNR and TOPIQ score per method.

    python examples/train_sr.py                  # ~2-3 min on a 2-core CPU
    python examples/train_sr.py --weights pipal --steps 600 --device cuda
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import kornia
import torch
import torch.nn as nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from topiq_loss import SRLoss  # noqa: E402


class TinySR(nn.Module):
    """ESPCN-like x``scale`` network with a bicubic skip: it learns the missing detail."""

    def __init__(self, scale: int, width: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        nn.init.zeros_(self.body[-2].weight)
        nn.init.zeros_(self.body[-2].bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return upscale(lr, self.scale) + self.body(lr)


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic, antialiased: the usual SR degradation."""
    h, w = hr.shape[-2] // scale, hr.shape[-1] // scale
    return kornia.geometry.transform.resize(hr, (h, w), interpolation="bicubic", antialias=True).clamp(0, 1)


def upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    size = (lr.shape[-2] * scale, lr.shape[-1] * scale)
    return kornia.geometry.transform.resize(lr, size, interpolation="bicubic")


def train(
    name: str,
    loss_fn: SRLoss,
    args,
    photos: list[torch.Tensor],
    device: str,
) -> tuple[TinySR, dict[str, list[float]]]:
    torch.manual_seed(args.seed)
    model = TinySR(args.scale).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)  # same patches for every run
    curves: dict[str, list[float]] = {"total": [], "pixel": [], "topiq": []}
    for _ in tqdm(range(args.steps), desc=name, unit="step"):
        hr = C.random_patches(photos, args.patch, args.batch, gen).to(device)
        sr = model(downscale(hr, args.scale))
        terms = loss_fn.terms(sr, hr)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        sched.step()
        for k in curves:
            if k in terms:
                curves[k].append(terms[k].item())
    return model.eval(), curves


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=2, help="upscaling factor (default 2)")
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    p.add_argument("--patch", type=int, default=96, help="HR patch size (default 96)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    p.add_argument("--topiq-weight", type=float, default=0.1, help="weight of TOPIQ vs L1 (default 0.1)")
    p.add_argument("--test-size", type=int, default=192, help="HR test crop size (default 192)")
    args = p.parse_args(argv)
    timer = C.Timer()
    topiq, out, label = C.setup(args)
    photos = [C.photo(n) for n in C.TRAIN_PHOTOS]
    hr_test = C.centre_crop(C.photo(C.TEST_PHOTO), args.test_size).to(args.device)
    lr_test = downscale(hr_test, args.scale)

    runs = {
        "L1": SRLoss(args.scale, pixel="l1", topiq_weight=0.0, topiq=topiq),
        "L1 + TOPIQ": SRLoss(args.scale, pixel="l1", topiq_weight=args.topiq_weight, topiq=topiq),
    }
    outputs = {"bicubic": upscale(lr_test, args.scale).clamp(0, 1)}
    curves = {}
    for name, loss_fn in runs.items():
        model, curves[name] = train(name, loss_fn, args, photos, args.device)
        with torch.no_grad():
            outputs[name] = model(lr_test).clamp(0, 1)

    results = {}
    with torch.no_grad():
        for name, img in outputs.items():
            results[name] = {"psnr": C.psnr(img, hr_test), "topiq": float(topiq.score(img, hr_test))}
    print(f"\nx{args.scale} SR on a {args.test_size}px crop of the held-out photo ({label})")
    print(f"{'method':<18}{'PSNR dB':>9}{'TOPIQ':>9}")
    for name, r in results.items():
        print(f"{name:<18}{r['psnr']:>9.2f}{r['topiq']:>9.4f}")

    C.plot_curves(
        {f"{n}: {k}": v for n, c in curves.items() for k, v in c.items() if v and (k != "total" or n != "L1")},
        out / "sr_loss_curves.png",
        f"x{args.scale} SR training ({label})",
    )
    nearest = torch.nn.functional.interpolate(lr_test, scale_factor=args.scale, mode="nearest")
    panels = [("LR input", nearest)]
    panels += [(f"{n}\n{r['psnr']:.2f} dB, TOPIQ {r['topiq']:.3f}", outputs[n]) for n, r in results.items()]
    panels.append(("HR ground truth", hr_test))
    C.save_grid(panels, out / "sr_before_after.png", f"x{args.scale} super-resolution, held-out photo ({label})")
    print(f"wrote {out / 'sr_loss_curves.png'} and {out / 'sr_before_after.png'} in {timer():.0f} s")
    return results


if __name__ == "__main__":
    main()
