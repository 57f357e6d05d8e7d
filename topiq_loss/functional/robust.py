"""Robust mode: a random-transformation ensemble of the TOPIQ score (E-LPIPS style).

A learned metric optimised directly can be gamed by small pixel-aligned patterns
(Kettunen, Härkönen, Lehtinen, "E-LPIPS: Robust Perceptual Image Similarity via
Random Transformation Ensembles", 2019). Scoring each pair under a random
translation / flip / transpose / downscale, applied identically to prediction and
target, makes such patterns stop paying: they do not survive the transforms.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .._checks import MIN_SIZE, check_bool

__all__ = ["RandomTransforms", "ensemble_score", "private_generator"]


@dataclass(frozen=True)
class RandomTransforms:
    """Robust mode's settings: which transforms the ensemble draws from (per sample and
    per call), how many draws each call averages, and the generator they come from.
    Pass it as ``robust=`` to a loss (``robust=True`` means ``RandomTransforms()``).

    Attributes:
        max_shift: translation by 0..max_shift px in each axis (reflect padding, size
            kept); clamped to ``side - 1`` for images smaller than that (reflect padding
            needs a border narrower than the image).
        flips: horizontal and vertical flips, each with probability 1/2.
        transpose: swap H and W with probability 1/2.
        downscale: integer 2x2 box downscale with probability 1/2, when both sides stay
            >= 32 px.
        colour: channel permutation and a per-channel gain in [0.8, 1.2] of the
            intensity above the input range's low end (off by default: they change
            what "the same colour" means to the model).
        samples: transforms averaged per call (1 for training, more to evaluate).
        generator: a seeded ``torch.Generator`` for reproducible draws; ``None``
            (default): each loss holding these settings gets a private generator
            seeded from the OS (torch's global RNG is never advanced), reseeded in
            every unpickled copy (DDP ranks, workers).

    Example:
        >>> import torch
        >>> from topiq_loss import CFANetFR, TOPIQLoss
        >>> robust = RandomTransforms(colour=True, samples=2, generator=torch.Generator().manual_seed(0))
        >>> loss_fn = TOPIQLoss(net=CFANetFR(), robust=robust)
        >>> x = torch.rand(2, 3, 64, 48)
        >>> loss_fn.score(x, x).shape
        torch.Size([2])
    """

    max_shift: int = 7
    flips: bool = True
    transpose: bool = True
    downscale: bool = True
    colour: bool = False
    samples: int = 1
    generator: torch.Generator | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise ValueError(f"`max_shift` must be an int >= 0 (pixels); got {self.max_shift!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"`samples` must be an int >= 1; got {self.samples!r}")
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise TypeError(f"`generator` must be a torch.Generator or None; got {type(self.generator).__name__}")
        for name in ("flips", "transpose", "downscale", "colour"):
            check_bool(getattr(self, name), name)


def private_generator() -> torch.Generator:
    """A CPU generator seeded from the OS: draws never touch torch's global RNG."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))


def _draw(n: int, h: int, w: int, cfg: RandomTransforms, gen: torch.Generator) -> dict[str, torch.Tensor]:
    def coin() -> torch.Tensor:
        return torch.rand(n, generator=gen) < 0.5

    params = {
        "dy": torch.randint(0, min(cfg.max_shift, h - 1) + 1, (n,), generator=gen),
        "dx": torch.randint(0, min(cfg.max_shift, w - 1) + 1, (n,), generator=gen),
        "hflip": coin() if cfg.flips else torch.zeros(n, dtype=torch.bool),
        "vflip": coin() if cfg.flips else torch.zeros(n, dtype=torch.bool),
        "transpose": coin() if cfg.transpose else torch.zeros(n, dtype=torch.bool),
        "down": coin() if cfg.downscale and min(h, w) // 2 >= MIN_SIZE else torch.zeros(n, dtype=torch.bool),
    }
    if cfg.colour:
        params["perm"] = torch.stack([torch.randperm(3, generator=gen) for _ in range(n)])
        params["gain"] = 0.8 + 0.4 * torch.rand(n, 3, generator=gen)
    return params


def _transform_one(x: torch.Tensor, p: dict[str, torch.Tensor], i: int, low: float) -> torch.Tensor:
    """Sample ``i``'s transform of ``x`` (1, C, H, W) whose range starts at ``low``."""
    h, w = x.shape[-2:]
    dy, dx = int(p["dy"][i]), int(p["dx"][i])
    if dy or dx:
        # Reflect padding needs pad < size: _draw clamps the shift to size - 1.
        x = F.pad(x, (dx, 0, dy, 0), mode="reflect")[..., :h, :w]
    if bool(p["hflip"][i]):
        x = x.flip(-1)
    if bool(p["vflip"][i]):
        x = x.flip(-2)
    if bool(p["transpose"][i]):
        x = x.transpose(-1, -2)
    if bool(p["down"][i]):
        x = F.avg_pool2d(x, 2)
    if "perm" in p and x.shape[1] == 3:
        # A gain of the intensity above black, so (-1, 1) inputs get the same
        # transform as (0, 1) ones (a plain product would shift their mid-grey).
        x = low + (x[:, p["perm"][i]] - low) * p["gain"][i].to(x).view(1, 3, 1, 1)
    return x


def ensemble_score(
    score: Callable[..., torch.Tensor],
    images: tuple[torch.Tensor, ...],
    cfg: RandomTransforms,
    generator: torch.Generator,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Mean over ``cfg.samples`` draws of ``score(*transformed images)``, per sample: (N,).

    Every image of ``images`` (prediction and target, or one image) gets the same
    transform; each batch sample its own. Samples whose transformed shapes agree are
    scored together (a transpose of a non-square image, or a downscale, changes it).
    """
    n, _, h, w = images[0].shape
    total = images[0].new_zeros(n, dtype=torch.promote_types(images[0].dtype, torch.float32))
    for _ in range(cfg.samples):
        p = _draw(n, h, w, cfg, generator)
        out = [[_transform_one(x[i : i + 1], p, i, input_range[0]) for i in range(n)] for x in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i in range(n):
            groups.setdefault(tuple(out[0][i].shape[-2:]), []).append(i)  # type: ignore[arg-type]
        scores = images[0].new_zeros(n, dtype=torch.promote_types(images[0].dtype, torch.float32))
        for idx in groups.values():
            batch = [torch.cat([parts[i] for i in idx]) for parts in out]
            s = score(*batch)
            scores = scores.index_put((torch.tensor(idx, device=scores.device),), s.to(scores.dtype))
        total = total + scores
    return total / cfg.samples
