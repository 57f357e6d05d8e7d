"""Optimise a degraded photograph's pixels directly against TOPIQ, with and without fidelity.

A crop of scikit-image's chelsea photo is blurred, made noisy and JPEG-compressed.
Starting from that degraded observation ``y``, the pixels ``x`` are optimised with Adam
to minimise ``TOPIQLoss(x, reference) + fidelity_weight * MSE(x, y)`` (anchored at the reference): TOPIQ pulls
towards the reference's appearance, the fidelity term keeps ``x`` close to what was
observed (and so limits adversarial drift of the metric). Three runs, same steps:
TOPIQ alone (fidelity 0), robust TOPIQ alone (the random-transformation ensemble,
``TOPIQLoss(robust=True)``) and TOPIQ + fidelity. The table adds SSIM, VIFp (a classical
full-reference metric with no learned weights) and the ensemble score on fixed fresh
transforms, which show whether a run improved the image or only the plain score. Optimising an image against a
full-reference model is also how such models are probed (Ding et al., 2021).
Writes ``optimise_loss_curves.png`` and ``optimise_before_after.png`` to ``--out``
and prints PSNR and TOPIQ score.

    python examples/optimise_image.py            # ~3 min on a 2-core CPU
    python examples/optimise_image.py --steps 500 --size 384 --device cuda
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

import kornia
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from topiq_loss import RandomTransforms, TOPIQLoss, pixel_loss  # noqa: E402
from topiq_loss.cli.app import read_image, to_pil  # noqa: E402


def degrade(ref: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian blur (sigma 1.5), Gaussian noise (std 0.03), JPEG quality 30."""
    x = kornia.filters.gaussian_blur2d(ref, (9, 9), (1.5, 1.5))
    x = (x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
    buf = io.BytesIO()
    to_pil(x).save(buf, format="JPEG", quality=30)
    return read_image(buf)


def optimise(
    name: str, observed: torch.Tensor, ref: torch.Tensor, topiq: TOPIQLoss, fidelity_weight: float, args
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    x = observed.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=args.lr)
    # The reference never changes: its backbone features are computed once (a robust
    # loss transforms it at every step instead).
    fixed = (lambda p: topiq(p, ref)) if topiq.robust else topiq.with_target(ref)
    curves: dict[str, list[float]] = {"MSE to observed": [], "TOPIQ loss": []}
    for _ in tqdm(range(args.steps), desc=name, unit="step"):
        fidelity = pixel_loss(x, observed, "mse")
        perceptual = fixed(x)
        loss = perceptual + fidelity_weight * fidelity
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)  # stay a valid image
        curves["MSE to observed"].append(fidelity.item())
        curves["TOPIQ loss"].append(perceptual.item())
    return x.detach(), curves


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="crop size in pixels (default 256)")
    p.add_argument("--steps", type=int, default=150, help="optimisation steps per run (default 150)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate on pixels (default 3e-3)")
    p.add_argument(
        "--fidelity-weight", type=float, default=10.0, help="weight of MSE to the observed image (default 10)"
    )
    args = p.parse_args(argv)
    timer = C.Timer()
    topiq, out, label = C.setup(args)
    ref = C.centre_crop(C.photo(C.TEST_PHOTO), args.size).to(args.device)
    degraded = degrade(ref.cpu(), args.seed).to(args.device)

    images = {"degraded": degraded}
    curves = {}
    robust = TOPIQLoss(net=topiq.net, robust=RandomTransforms(generator=torch.Generator().manual_seed(args.seed)))
    runs = (
        ("TOPIQ", topiq, 0.0),
        ("robust TOPIQ", robust, 0.0),
        ("TOPIQ + fidelity", topiq, args.fidelity_weight),
    )
    for name, loss_fn, weight in runs:
        images[name], curves[name] = optimise(name, degraded, ref, loss_fn, weight, args)

    results = C.evaluate(images, ref, topiq)
    # The robust metric judged on fixed fresh transforms (the same for every image).
    for name, img in images.items():
        judge = TOPIQLoss(net=topiq.net, robust=RandomTransforms(samples=8, generator=torch.Generator().manual_seed(99)))
        with torch.no_grad():
            results[name]["robust"] = float(judge.score(img.clamp(0, 1), ref))
        results[name]["ssim"] = C.ssim(img, ref)
        results[name]["vif"] = C.vifp(img, ref)
    panels = [*C.captioned(results, images), ("reference", ref)]
    title = f"pixel optimisation, {args.steps} steps, {args.size}px crop"
    C.report(results, title, curves, panels, out, "optimise", label, ylabel="term value (unweighted)")
    print(f"done in {timer():.0f} s")
    return results


if __name__ == "__main__":
    main()
