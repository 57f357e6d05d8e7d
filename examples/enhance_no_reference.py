"""x2 super-resolution without ground truth: self-consistency alone vs + TOPIQ-NR.

No high-resolution image is used for training. A small x2 network (the one of
``train_sr.py``) learns from low-resolution photographs only: its output, downscaled
again, must match the input (an L1 *consistency* term, which keeps the input's own
structure), and in the second run a no-reference TOPIQ term asks the output to look
like a good photograph. Training photos: scikit-image's astronaut, coffee and rocket at
half resolution. The held-out ground truth (a crop of chelsea) is only used to report
PSNR at the end, beside the NR score. Writes ``nr_loss_curves.png`` and
``nr_before_after.png`` to ``--out``.

    python examples/enhance_no_reference.py             # ~2-3 min on a 2-core CPU
    python examples/enhance_no_reference.py --weights flive --steps 600 --device cuda
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from train_sr import TinySR, downscale, upscale  # noqa: E402

from topiq_loss import NR_WEIGHTS, TOPIQNRLoss, pixel_loss  # noqa: E402


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    p = C.base_parser(__doc__.splitlines()[0], no_reference=True)
    p.add_argument("--steps", type=int, default=250, help="training steps per run (default 250)")
    p.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    p.add_argument("--patch", type=int, default=48, help="LR patch size; outputs are twice that (default 48)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    p.add_argument("--nr-weight", type=float, default=0.05, help="weight of TOPIQ-NR vs consistency (default 0.05)")
    p.add_argument("--test-size", type=int, default=192, help="HR test crop size (default 192)")
    args = p.parse_args(argv)
    timer = C.Timer()
    out = C.output_folder(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if args.weights is None else "default")
        nr = TOPIQNRLoss(weights=args.weights, reduction="none").to(args.device)
    label = C.weights_label(args.weights, NR_WEIGHTS, "NR")
    scale = 2
    # Training data: low-resolution photographs only.
    lr_photos = [downscale(C.photo(n)[None], scale)[0] for n in C.TRAIN_PHOTOS]
    hr_test = C.centre_crop(C.photo(C.TEST_PHOTO), args.test_size).to(args.device)
    lr_test = downscale(hr_test, scale)

    images = {"bicubic": upscale(lr_test, scale).clamp(0, 1)}
    curves = {}
    for name, weight in (("consistency", 0.0), ("consistency + NR", args.nr_weight)):
        gen = torch.Generator().manual_seed(args.seed)  # same patches for every run
        torch.manual_seed(args.seed)  # same initialisation
        model = TinySR(scale).to(args.device)

        def step(model: nn.Module, weight: float = weight, gen: torch.Generator = gen) -> dict:
            lr = C.random_patches(lr_photos, args.patch, args.batch, gen).to(args.device)
            sr = model(lr)
            terms = {"consistency": pixel_loss(downscale(sr, scale), lr, "l1")}
            total = terms["consistency"]
            if weight > 0:
                terms["NR"] = nr.loss_values(sr).mean()
                total = total + weight * terms["NR"]
            terms["total"] = total
            return terms

        curves[name] = C.fit(name, model, args.steps, args.lr, step)
        with torch.no_grad():
            images[name] = model(lr_test).clamp(0, 1)

    with torch.no_grad():
        results = {
            n: {"psnr": C.psnr(img, hr_test), "nr": float(nr.score(img.clamp(0, 1)))} for n, img in images.items()
        }
        results["HR ground truth"] = {"psnr": float("inf"), "nr": float(nr.score(hr_test))}
    images["HR ground truth"] = hr_test
    title = f"x{scale} SR trained without ground truth, {args.test_size}px crop of a held-out photo"
    C.report_no_reference(results, images, curves, title, label, out, "nr", key="nr", head="NR score")
    print(f"done in {timer():.0f} s")
    return results


if __name__ == "__main__":
    main()
