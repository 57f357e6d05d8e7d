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
from tqdm import tqdm

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


def train(name: str, loss_fn: DenoiseLoss, args, photos, device: str):
    torch.manual_seed(args.seed)
    model = TinyDnCNN().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)  # same patches and noise for every run
    curves: dict[str, list[float]] = {"total": [], "pixel": [], "topiq": []}
    for _ in tqdm(range(args.steps), desc=name, unit="step"):
        clean = C.random_patches(photos, args.patch, args.batch, gen).to(device)
        noisy = add_noise(clean, args.sigma, gen)
        terms = loss_fn.terms(model(noisy), clean, noisy)
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
    p.add_argument("--sigma", type=float, default=25.0, help="noise std on the 0-255 scale (default 25)")
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    p.add_argument("--patch", type=int, default=64, help="patch size (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--topiq-weight", type=float, default=0.1, help="weight of TOPIQ vs L1 (default 0.1)")
    p.add_argument("--test-size", type=int, default=192, help="test crop size (default 192)")
    args = p.parse_args(argv)
    timer = C.Timer()
    topiq, out, label = C.setup(args)
    photos = [C.photo(n) for n in C.TRAIN_PHOTOS]
    clean_test = C.centre_crop(C.photo(C.TEST_PHOTO), args.test_size).to(args.device)
    noisy_test = add_noise(clean_test, args.sigma, torch.Generator().manual_seed(args.seed + 1))

    runs = {
        "L1": DenoiseLoss("residual", pixel="l1", topiq_weight=0.0, topiq=topiq),
        "L1 + TOPIQ": DenoiseLoss("residual", pixel="l1", topiq_weight=args.topiq_weight, topiq=topiq),
    }
    outputs = {"noisy": noisy_test.clamp(0, 1)}
    curves = {}
    for name, loss_fn in runs.items():
        model, curves[name] = train(name, loss_fn, args, photos, args.device)
        with torch.no_grad():
            outputs[name] = (noisy_test - model(noisy_test)).clamp(0, 1)

    results = {}
    with torch.no_grad():
        for name, img in outputs.items():
            results[name] = {"psnr": C.psnr(img, clean_test), "topiq": float(topiq.score(img, clean_test))}
    print(f"\nDenoising, sigma {args.sigma:g}, {args.test_size}px crop of the held-out photo ({label})")
    print(f"{'method':<18}{'PSNR dB':>9}{'TOPIQ':>9}")
    for name, r in results.items():
        print(f"{name:<18}{r['psnr']:>9.2f}{r['topiq']:>9.4f}")

    C.plot_curves(
        {f"{n}: {k}": v for n, c in curves.items() for k, v in c.items() if v and (k != "total" or n != "L1")},
        out / "denoise_loss_curves.png",
        f"denoiser training, sigma {args.sigma:g} ({label})",
    )
    panels = [(f"{n}\n{r['psnr']:.2f} dB, TOPIQ {r['topiq']:.3f}", outputs[n]) for n, r in results.items()]
    panels.append(("clean ground truth", clean_test))
    C.save_grid(panels, out / "denoise_before_after.png", f"denoising, held-out photo ({label})")
    print(f"wrote {out / 'denoise_loss_curves.png'} and {out / 'denoise_before_after.png'} in {timer():.0f} s")
    return results


if __name__ == "__main__":
    main()
