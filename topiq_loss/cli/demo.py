"""The ``demo`` command: how TOPIQ-FR ranks common degradations of a real photograph."""

from __future__ import annotations

import torch

from ..losses.fr import TOPIQLoss
from .images import read_image, to_pil

__all__ = ["demo"]


def _demo_rows(ref: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    import io

    import kornia

    gen = torch.Generator().manual_seed(0)
    rows = []
    for sigma in (1.0, 2.0, 4.0):
        k = 2 * int(3 * sigma) + 1
        rows.append((f"gaussian blur, sigma {sigma:g}", kornia.filters.gaussian_blur2d(ref, (k, k), (sigma, sigma))))
    for std in (0.02, 0.05, 0.1):
        noisy = ref + std * torch.randn(ref.shape, generator=gen)
        rows.append((f"gaussian noise, std {std:g}", noisy.clamp(0, 1)))
    for q in (50, 20, 5):
        buf = io.BytesIO()
        to_pil(ref).save(buf, format="JPEG", quality=q)
        rows.append((f"JPEG, quality {q}", read_image(buf)))
    return rows


def demo(weights: str | None, size: int, device: str, cache_dir: str | None = None) -> None:
    """Print how TOPIQ-FR ranks common degradations of a real photograph."""
    try:
        from skimage import data
    except ImportError as exc:
        raise RuntimeError("the demo needs scikit-image: pip install 'topiq-loss[examples]'") from exc
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255)  # type: ignore[no-untyped-call]
    top = (photo.shape[1] - size) // 2
    ref = photo[None, :, top : top + size, top : top + size].contiguous()
    loss_fn = TOPIQLoss(weights=weights, cache_dir=cache_dir).to(device)
    name = "random weights, meaningless" if weights is None else loss_fn.weights_name
    print(f"TOPIQ-FR ({name}) on a {size}x{size} crop of scikit-image's astronaut; higher score is better")
    print(f"{'degradation':<28}{'PSNR dB':>9}{'score':>9}{'loss':>9}")
    fixed = loss_fn.with_target(ref.to(device))  # one backbone pass for the reference
    with torch.no_grad():
        for row, img in _demo_rows(ref):
            mse = torch.mean((img - ref) ** 2).item()
            psnr = 10 * torch.log10(torch.tensor(1.0 / mse)).item()
            score = fixed.score(img.to(device)).item()
            print(f"{row:<28}{psnr:>9.2f}{score:>9.4f}{1 - score:>9.4f}")
