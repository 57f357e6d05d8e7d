"""Shared helpers of the examples: photographs, patches, PSNR, figures, options.

The photographs are scikit-image's bundled data (real photos, in the `examples` extra).
"""

from __future__ import annotations

import argparse
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from topiq_loss import WEIGHTS, TOPIQLoss
from topiq_loss.cli.app import add_weights_option, weights_arg
from topiq_loss.weights.registry import DEFAULT_NR_WEIGHTS, NR_WEIGHTS

TRAIN_PHOTOS = ("astronaut", "coffee", "rocket")
TEST_PHOTO = "chelsea"  # held out: the cat is never seen in training


def photo(name: str) -> torch.Tensor:
    """A scikit-image photograph as a (3, H, W) float32 tensor in [0, 1]."""
    try:
        from skimage import data
    except ImportError as exc:
        raise SystemExit("the examples need scikit-image: pip install 'topiq-loss[examples]'") from exc
    arr = getattr(data, name)()
    img = torch.from_numpy(arr).float().div(255)
    return img.expand(3, -1, -1) if img.dim() == 2 else img.permute(2, 0, 1).contiguous()


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` crop of (C, H, W) as (1, C, size, size)."""
    h, w = img.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[None, :, top : top + size, left : left + size].contiguous()


def random_patches(images: Sequence[torch.Tensor], size: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops (with random flips) from ``images``: (n, 3, size, size)."""
    out = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        top = int(torch.randint(img.shape[-2] - size + 1, (1,), generator=gen))
        left = int(torch.randint(img.shape[-1] - size + 1, (1,), generator=gen))
        patch = img[:, top : top + size, left : left + size]
        if torch.rand((), generator=gen) < 0.5:
            patch = patch.flip(-1)
        out.append(patch)
    return torch.stack(out)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (``a`` clamped), averaged over the batch."""
    mse = (a.clamp(0, 1) - b).square().flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())


def add_nr_weights_option(parser: argparse.ArgumentParser) -> None:
    """``--weights koniq|spaq|flive|ava|PATH|random`` for the no-reference examples."""
    parser.add_argument(
        "--weights",
        default=DEFAULT_NR_WEIGHTS,
        type=weights_arg,
        help=f"TOPIQ-NR weights: {' | '.join(NR_WEIGHTS)} | PATH to a checkpoint | random "
        f"(untrained, tests only); default {DEFAULT_NR_WEIGHTS}",
    )


def base_parser(description: str, no_reference: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if no_reference:
        add_nr_weights_option(p)
    else:
        add_weights_option(p)
    p.add_argument("--out", default="example_outputs", help="folder for the PNGs (default example_outputs)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    return p


def training_parser(description: str, patch: int, lr: float) -> argparse.ArgumentParser:
    """:func:`base_parser` plus the options both training examples take (their defaults differ)."""
    p = base_parser(description)
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    p.add_argument("--patch", type=int, default=patch, help=f"(HR) patch size (default {patch})")
    p.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default {lr:g})")
    p.add_argument("--topiq-weight", type=float, default=0.1, help="weight of TOPIQ vs L1 (default 0.1)")
    p.add_argument("--test-size", type=int, default=192, help="(HR) test crop size (default 192)")
    return p


def weights_label(weights: object, registry: dict, kind: str) -> str:
    """How figures name the weights; random ones are flagged as meaningless."""
    if weights in registry:
        return f"TOPIQ-{kind} weights: {weights}"
    if weights is None:
        return "UNTRAINED random TOPIQ weights (test mode): scores are meaningless"
    return f"TOPIQ-{kind} weights: {Path(str(weights)).name}"


def output_folder(args: argparse.Namespace) -> Path:
    """Applies ``--threads`` and creates ``--out``."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def setup(args: argparse.Namespace) -> tuple[TOPIQLoss, Path, str]:
    """The frozen TOPIQ loss, the output folder, and a label naming the weights for figures."""
    out = output_folder(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if args.weights is None else "default")
        topiq = TOPIQLoss(weights=args.weights).to(args.device)
    return topiq, out, weights_label(args.weights, WEIGHTS, "FR")


def plot_curves(curves: dict[str, Sequence[float]], path: Path, title: str, ylabel: str = "loss") -> None:
    """One line per named curve (smoothed over 10 steps), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for name, ys in curves.items():
        t = torch.tensor(list(ys), dtype=torch.float64)
        k = min(10, len(t))
        smooth = torch.nn.functional.avg_pool1d(t[None, None], k, stride=1).flatten() if k > 1 else t
        ax.plot(range(k - 1, k - 1 + len(smooth)), smooth.tolist(), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 70), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_grid(panels: Sequence[tuple[str, torch.Tensor]], path: Path, title: str) -> None:
    """Images (1, 3, H, W) side by side with their captions, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.6 * len(panels), 3.2), dpi=100, squeeze=False, layout="constrained"
    )
    for ax, (caption, img) in zip(axes[0], panels, strict=True):
        ax.imshow(img[0].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    fig.suptitle(textwrap.fill(title, 40 * len(panels)), fontsize=9)
    fig.savefig(path)
    plt.close(fig)


def fit(
    name: str,
    model: torch.nn.Module,
    steps: int,
    lr: float,
    step_terms: Callable[[torch.nn.Module], dict[str, torch.Tensor]],
) -> dict[str, list[float]]:
    """Adam + cosine schedule for ``steps``; ``step_terms(model)`` draws a batch and returns
    the loss terms (``"total"`` is minimised). Returns each term's value per step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    curves: dict[str, list[float]] = {}
    model.train()
    for _ in tqdm(range(steps), desc=name, unit="step"):
        terms = step_terms(model)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        sched.step()
        for k, v in terms.items():
            curves.setdefault(k, []).append(v.item())
    model.eval()
    return curves


def report(
    results: dict[str, dict[str, float]],
    title: str,
    curves: dict[str, dict[str, list[float]]],
    panels: list[tuple[str, torch.Tensor]],
    out: Path,
    stem: str,
    label: str,
    ylabel: str = "loss",
) -> None:
    """Print the PSNR / TOPIQ table and write ``{stem}_loss_curves.png`` and ``{stem}_before_after.png``.

    ``panels`` are (caption, image) pairs: each result's image (captioned with its PSNR
    and score) should come first, in the order of ``results``, then any extra ones.
    """
    print(f"\n{title} ({label})")
    columns = list(next(iter(results.values())))
    heads = {"psnr": "PSNR dB", "topiq": "TOPIQ", "ssim": "SSIM", "vif": "VIFp", "robust": "TOPIQ ens."}
    width = max(len(n) for n in results) + 2
    print(f"{'':<{width}}" + "".join(f"{heads.get(c, c):>11}" for c in columns))
    for name, r in results.items():
        print(f"{name:<{width}}" + "".join(f"{r[c]:>11.{2 if c == 'psnr' else 4}f}" for c in columns))
    # A run with a single term has total == that term: one line is enough.
    flat = {f"{run}: {k}": v for run, c in curves.items() for k, v in c.items() if not (k == "total" and len(c) == 2)}
    plot_curves(flat, out / f"{stem}_loss_curves.png", f"{title} ({label})", ylabel=ylabel)
    save_grid(panels, out / f"{stem}_before_after.png", f"{title} ({label})")
    print(f"wrote {out / f'{stem}_loss_curves.png'} and {out / f'{stem}_before_after.png'}")


def report_no_reference(
    results: dict[str, dict[str, float]],
    images: dict[str, torch.Tensor],
    curves: dict[str, dict[str, list[float]]],
    title: str,
    label: str,
    out: Path,
    stem: str,
    key: str,
    head: str,
) -> None:
    """The no-reference examples' report: PSNR and the ``key`` score (column ``head``) per
    image, ``{stem}_loss_curves.png`` (each run's terms) and ``{stem}_before_after.png``."""
    print(f"\n{title} ({label})")
    width = max(len(n) for n in results) + 2
    print(f"{'':<{width}}{'PSNR dB':>9}{head:>{len(head) + 2}}")
    for n, r in results.items():
        print(f"{n:<{width}}{r['psnr']:>9.2f}{r[key]:>{len(head) + 2}.4f}")
    flat = {f"{run}: {k}": v for run, c in curves.items() for k, v in c.items() if not (k == "total" and len(c) == 2)}
    plot_curves(flat, out / f"{stem}_loss_curves.png", f"{title} ({label})", ylabel="term value")
    short = head.split()[0]
    panels = [(f"{n}\n{r['psnr']:.2f} dB, {short} {r[key]:.3f}", images[n]) for n, r in results.items()]
    save_grid(panels, out / f"{stem}_before_after.png", f"{title} ({label})")
    print(f"wrote {out / f'{stem}_loss_curves.png'} and {out / f'{stem}_before_after.png'}")


def captioned(results: dict[str, dict[str, float]], images: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """(caption, image) per result, the caption giving its PSNR and TOPIQ score."""
    return [(f"{n}\n{r['psnr']:.2f} dB, TOPIQ {r['topiq']:.3f}", images[n]) for n, r in results.items()]


def evaluate(
    images: dict[str, torch.Tensor], reference: torch.Tensor, topiq: TOPIQLoss
) -> dict[str, dict[str, float]]:
    """PSNR and TOPIQ score of each named image against ``reference``."""
    with torch.no_grad():
        return {
            n: {"psnr": psnr(img, reference), "topiq": float(topiq.score(img.clamp(0, 1), reference))}
            for n, img in images.items()
        }


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSIM (11x11 Gaussian window, kornia) of images in [0, 1], averaged."""
    import kornia

    return float(kornia.metrics.ssim(a.clamp(0, 1), b, 11).mean())


def vifp(dist: torch.Tensor, ref: torch.Tensor, sigma_nsq: float = 2.0) -> float:
    """Pixel-domain visual information fidelity (VIFp; Sheikh and Bovik, 2006) on luma.

    A classical full-reference metric with no learned weights: 1 for identical
    images, lower for lost information, above 1 for contrast enhancement.
    """
    def luma(x: torch.Tensor) -> torch.Tensor:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
        return (x.clamp(0, 1).double() * w).sum(1, keepdim=True) * 255

    def gauss(n: int) -> torch.Tensor:
        ax = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        g = torch.exp(-(ax**2) / (2 * (n / 5.0) ** 2))
        k = g[:, None] * g[None, :]
        return (k / k.sum()).view(1, 1, n, n)

    x, y = luma(ref), luma(dist)
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = gauss(n)
        if scale > 1:
            if min(x.shape[-2:]) < 3 * n:
                break  # tiny images (smoke tests): the coarser scales do not fit
            x = torch.nn.functional.conv2d(x, win)[..., ::2, ::2]
            y = torch.nn.functional.conv2d(y, win)[..., ::2, ::2]
        mu1, mu2 = torch.nn.functional.conv2d(x, win), torch.nn.functional.conv2d(y, win)
        s1 = (torch.nn.functional.conv2d(x * x, win) - mu1**2).clamp_min(0)
        s2 = (torch.nn.functional.conv2d(y * y, win) - mu2**2).clamp_min(0)
        s12 = torch.nn.functional.conv2d(x * y, win) - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        g = torch.where(s1 < 1e-10, torch.zeros_like(g), g)
        sv = torch.where(s1 < 1e-10, s2, sv)
        s1 = torch.where(s1 < 1e-10, torch.zeros_like(s1), s1)
        g = torch.where(s2 < 1e-10, torch.zeros_like(g), g)
        sv = torch.where(s2 < 1e-10, torch.zeros_like(sv), sv)
        sv = torch.where(g < 0, s2, sv)
        g = g.clamp_min(0)
        sv = sv.clamp_min(1e-10)
        num += float(torch.log10(1 + g**2 * s1 / (sv + sigma_nsq)).sum())
        den += float(torch.log10(1 + s1 / sigma_nsq).sum())
    return num / den


class Timer:
    """Wall-clock seconds since creation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
