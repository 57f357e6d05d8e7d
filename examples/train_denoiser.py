"""Train a small residual denoiser (DnCNN-style) on real photographs: L1 vs L1 + TOPIQ.

The network predicts the noise; ``DenoiseLoss(predicts="residual")`` turns that into the
clean estimate ``noisy - output`` before both loss terms. Gaussian noise of ``--sigma``
(on the 0-255 scale) is added to patches of scikit-image's astronaut, coffee and rocket;
the test image is a held-out crop of chelsea. Writes ``denoise_loss_curves.png`` and
``denoise_before_after.png`` to ``--out`` and prints PSNR and TOPIQ score per method.

    python examples/train_denoiser.py            # ~2-3 min on a 2-core CPU
    python examples/train_denoiser.py --sigma 50 --weights pipal
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from topiq_loss import DenoiseLoss  # noqa: E402


class TinyDnCNN(nn.Module):
    """A few conv + ReLU layers predicting the noise residual."""

    def __init__(self, depth: int = 6, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return self.body(noisy)


def add_noise(clean: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(clean.shape, generator=gen).to(clean.device)
    return clean + sigma / 255.0 * noise


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    p = C.training_parser(__doc__.splitlines()[0], patch=64, lr=1e-3)
    p.add_argument("--sigma", type=float, default=25.0, help="noise std on the 0-255 scale (default 25)")
    args = p.parse_args(argv)
    timer = C.Timer()
    topiq, out, label = C.setup(args)
    photos = [C.photo(n) for n in C.TRAIN_PHOTOS]
    clean_test = C.centre_crop(C.photo(C.TEST_PHOTO), args.test_size).to(args.device)
    noisy_test = add_noise(clean_test, args.sigma, torch.Generator().manual_seed(args.seed + 1))

    images = {"noisy": noisy_test.clamp(0, 1)}
    curves = {}
    for name, weight in (("L1", 0.0), ("L1 + TOPIQ", args.topiq_weight)):
        loss_fn = DenoiseLoss("residual", pixel="l1", topiq_weight=weight, topiq=topiq)
        gen = torch.Generator().manual_seed(args.seed)  # same patches and noise for every run
        torch.manual_seed(args.seed)  # same initialisation
        model = TinyDnCNN().to(args.device)

        def step(model: nn.Module, loss_fn: DenoiseLoss = loss_fn, gen: torch.Generator = gen) -> dict:
            clean = C.random_patches(photos, args.patch, args.batch, gen).to(args.device)
            noisy = add_noise(clean, args.sigma, gen)
            return loss_fn.terms(model(noisy), clean, noisy)

        curves[name] = C.fit(name, model, args.steps, args.lr, step)
        with torch.no_grad():
            images[name] = (noisy_test - model(noisy_test)).clamp(0, 1)

    results = C.evaluate(images, clean_test, topiq)
    panels = [*C.captioned(results, images), ("clean ground truth", clean_test)]
    title = f"denoising, sigma {args.sigma:g}, {args.test_size}px crop of a held-out photo"
    C.report(results, title, curves, panels, out, "denoise", label)
    print(f"done in {timer():.0f} s")
    return results


if __name__ == "__main__":
    main()
