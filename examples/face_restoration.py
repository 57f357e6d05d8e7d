"""Face restoration fine-tune: L1 alone vs L1 + the TOPIQ face-quality loss.

A small restoration network learns to undo blur, noise and down-sampling on a face
crop. The second run adds the no-reference TOPIQ face model (``--weights face``,
CGFIQA-trained, pyiqa's ``topiq_nr-face``) *with the ground truth*: the term is 0 once
the output looks as good a face as the ground truth, and never rewards looking "better"
than it. Batched and differentiable, unlike pyiqa's face path, which aligns every image
with facexlib first (batch size 1, no gradient).

The face models expect aligned, centred face crops such as FFHQ's or CGFIQA's: in a
face-restoration loop (GFPGAN, CodeFormer, RestoreFormer in BasicSR) that is what the
batch already holds. Here the crop is the face of scikit-image's astronaut photograph,
roughly centred by hand, not aligned by landmarks; for a real run feed your aligned
512x512 crops. Writes ``face_loss_curves.png`` and ``face_before_after.png`` to ``--out``.

    python examples/face_restoration.py                    # ~5 min on a 2-core CPU
    python examples/face_restoration.py --weights face_swin --steps 400 --device cuda
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import kornia
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from topiq_loss import NR_WEIGHTS, TOPIQNRLoss, pixel_loss  # noqa: E402

#: The astronaut's face in scikit-image's 512x512 photograph (rows, cols of the box's top left, size).
FACE_BOX = (0, 100, 250)


def face_crop(size: int) -> torch.Tensor:
    """The astronaut's face, (1, 3, size, size) in [0, 1]."""
    top, left, side = FACE_BOX
    face = C.photo("astronaut")[None, :, top : top + side, left : left + side]
    return kornia.geometry.transform.resize(face, (size, size), interpolation="bicubic", antialias=True).clamp(0, 1)


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, x4 down and up, Gaussian noise: a mild blind-restoration degradation."""
    h, w = x.shape[-2:]
    y = kornia.filters.gaussian_blur2d(x, (7, 7), (1.5, 1.5))
    y = kornia.geometry.transform.resize(y, (h // 4, w // 4), interpolation="bicubic", antialias=True)
    y = kornia.geometry.transform.resize(y, (h, w), interpolation="bicubic")
    noise = torch.randn(y.shape, generator=gen, dtype=y.dtype) * 0.03
    return (y + noise.to(y.device)).clamp(0, 1)


class TinyRestorer(nn.Module):
    """A residual CNN at full resolution, starting as the identity."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 3, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    p = C.base_parser(__doc__.splitlines()[0], no_reference=True)
    p.set_defaults(weights="face")
    p.add_argument("--steps", type=int, default=150, help="training steps per run (default 150)")
    p.add_argument("--batch", type=int, default=2, help="degraded copies per step (default 2)")
    p.add_argument("--size", type=int, default=256, help="face crop size; the face models resize it (default 256)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    p.add_argument("--face-weight", type=float, default=0.1, help="weight of the face loss vs L1 (default 0.1)")
    args = p.parse_args(argv)
    timer = C.Timer()
    out = C.output_folder(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if args.weights is None else "default")
        face = TOPIQNRLoss(weights=args.weights).to(args.device)
    label = C.weights_label(args.weights, NR_WEIGHTS, "NR face")
    gt = face_crop(args.size).to(args.device)
    test = degrade(gt, torch.Generator().manual_seed(args.seed + 1))

    images = {"degraded": test}
    curves = {}
    for name, weight in (("L1", 0.0), ("L1 + face", args.face_weight)):
        gen = torch.Generator().manual_seed(args.seed)  # same degradations for every run
        torch.manual_seed(args.seed)  # same initialisation
        model = TinyRestorer().to(args.device)

        def step(model: nn.Module, weight: float = weight, gen: torch.Generator = gen) -> dict:
            target = gt.expand(args.batch, -1, -1, -1)
            restored = model(degrade(target, gen))
            terms = {"L1": pixel_loss(restored, target, "l1")}
            total = terms["L1"]
            if weight > 0:
                # With the ground truth: 0 once the output is as good a face as the target.
                terms["face"] = face(restored, target)
                total = total + weight * terms["face"]
            terms["total"] = total
            return terms

        curves[name] = C.fit(name, model, args.steps, args.lr, step)
        with torch.no_grad():
            images[name] = model(test).clamp(0, 1)

    with torch.no_grad():
        results = {n: {"psnr": C.psnr(img, gt), "face": float(face.score(img))} for n, img in images.items()}
        results["ground truth"] = {"psnr": float("inf"), "face": float(face.score(gt))}
    images["ground truth"] = gt
    title = f"Face restoration, {args.size}px crop"
    C.report_no_reference(results, images, curves, title, label, out, "face", key="face", head="face score")
    print(f"done in {timer():.0f} s")
    return results


if __name__ == "__main__":
    main()
