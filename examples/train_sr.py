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


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    p = C.training_parser(__doc__.splitlines()[0], patch=96, lr=5e-4)
    p.add_argument("--scale", type=int, default=2, help="upscaling factor (default 2)")
    args = p.parse_args(argv)
    timer = C.Timer()
    topiq, out, label = C.setup(args)
    photos = [C.photo(n) for n in C.TRAIN_PHOTOS]
    hr_test = C.centre_crop(C.photo(C.TEST_PHOTO), args.test_size).to(args.device)
    lr_test = downscale(hr_test, args.scale)

    images = {"bicubic": upscale(lr_test, args.scale).clamp(0, 1)}
    curves = {}
    for name, weight in (("L1", 0.0), ("L1 + TOPIQ", args.topiq_weight)):
        loss_fn = SRLoss(args.scale, pixel="l1", topiq_weight=weight, topiq=topiq)
        gen = torch.Generator().manual_seed(args.seed)  # same patches for every run
        torch.manual_seed(args.seed)  # same initialisation
        model = TinySR(args.scale).to(args.device)

        def step(model: nn.Module, loss_fn: SRLoss = loss_fn, gen: torch.Generator = gen) -> dict:
            hr = C.random_patches(photos, args.patch, args.batch, gen).to(args.device)
            return loss_fn.terms(model(downscale(hr, args.scale)), hr)

        curves[name] = C.fit(name, model, args.steps, args.lr, step)
        with torch.no_grad():
            images[name] = model(lr_test).clamp(0, 1)

    results = C.evaluate(images, hr_test, topiq)
    nearest = torch.nn.functional.interpolate(lr_test, scale_factor=args.scale, mode="nearest")
    panels = [("LR input", nearest), *C.captioned(results, images), ("HR ground truth", hr_test)]
    title = f"x{args.scale} SR, {args.test_size}px crop of a held-out photo"
    C.report(results, title, curves, panels, out, "sr", label)
    print(f"done in {timer():.0f} s")
    return results


if __name__ == "__main__":
    main()
