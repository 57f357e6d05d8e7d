"""TOPIQ as a ``torchmetrics.Metric``: the mean quality over a dataset, DDP-ready.

Needs the ``metrics`` extra (``pip install topiq-loss[metrics]``). The frozen network
is held as a plain attribute: it is never in the metric's ``state_dict``, never a
parameter, and follows ``.to()`` / ``.cuda()`` with the states. Metrics with the same
weights on one device share one network (see :mod:`topiq_loss.losses.shared`). The states are sums (of scores, of squared scores, and a count), reduced by
sum across processes, so ``compute()`` on any number of ranks gives the mean over the
whole data; per-image scores are kept only when asked for.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Hashable
from typing import Any, Literal

import torch

try:
    from torchmetrics import Metric
except ImportError as exc:  # the extra is optional; say how to get it
    raise ImportError(
        "topiq_loss.metrics.topiq needs torchmetrics: `pip install topiq-loss[metrics]` (or `pip install torchmetrics`)"
    ) from exc

from .. import _checks
from ..losses.fr import TOPIQLoss
from ..losses.frozen import FrozenNetworkLoss
from ..losses.nr import TOPIQNRLoss
from ..losses.shared import network_on_device, shared_fr_loss, shared_nr_loss
from ..models.cfanet_fr import CFANetFR
from ..models.cfanet_nr import CFANetNR
from ..weights.registry import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS

__all__ = ["TOPIQMetric", "TOPIQNRMetric"]


def _device_only(fn: Callable[..., Any], state: Any) -> Any:
    """``fn`` applied to a metric state (a tensor or a list of them), its dtype kept: a
    cast becomes a move to the device ``fn`` would have put the tensor on."""
    if isinstance(state, torch.Tensor):
        moved = fn(state)
        return moved if moved.dtype == state.dtype else state.to(device=moved.device)
    return [_device_only(fn, s) for s in state]


class _ScoreMetric(Metric):
    """Mean (and optionally std and per-image) TOPIQ score; see the subclasses."""

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    score_sum: torch.Tensor
    score_sq_sum: torch.Tensor
    count: torch.Tensor
    scores: list[torch.Tensor]

    def __init__(
        self,
        build: Callable[[], tuple[FrozenNetworkLoss, Hashable | None]],
        return_std: bool,
        return_per_image: bool,
        **kwargs: Any,
    ) -> None:
        # Options first: a typo should not cost a network build (or a download).
        return_std = _checks.check_bool(return_std, "return_std")
        return_per_image = _checks.check_bool(return_per_image, "return_per_image")
        super().__init__(**kwargs)
        self.return_std = return_std
        self.return_per_image = return_per_image
        # float64 sums: a mean over 1e5+ images stays exact to float32's precision.
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("score_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("score_sq_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        if self.return_per_image:
            self.add_state("scores", default=[], dist_reduce_fx="cat")
        # A plain attribute, as in FrozenNetworkLoss: no state_dict entry, no parameters.
        loss, key = build()
        self.__dict__["_frozen"] = (loss,)
        #: The shared network's cache key (None: a given or random network, not shared).
        self._network_key = key

    @property
    def loss(self) -> Any:
        """The frozen TOPIQ loss module whose ``score`` this metric averages."""
        return self.__dict__["_frozen"][0]

    def _follow(self, device: torch.device) -> None:
        """Hold the network on ``device``: the shared one there (a shared network is never
        moved, other metrics hold it), or a given one moved."""
        loss = self.loss
        net = network_on_device(self._network_key, loss.net, device)
        if net is not loss.net:
            loss._hold(net, loss.keep_in_state_dict)

    def _apply(self, fn: Callable[..., Any], exclude_state: Any = "") -> Any:
        # Every state keeps its own dtype whatever the metric is cast to (set_dtype, .half(),
        # .to(dtype)): a bfloat16 count sticks at 256 and a float16 one at 2048, and the
        # float64 sums are what keeps the mean exact. The states follow the device only; the
        # network stays float32 too.
        states = tuple(self._defaults)
        excluded = (exclude_state,) if isinstance(exclude_state, str) else tuple(exclude_state)
        this = super()._apply(fn, (*excluded, *states))
        for name in states:
            if name in excluded:
                continue
            self._defaults[name] = _device_only(fn, self._defaults[name])
            setattr(self, name, _device_only(fn, getattr(self, name)))
        self._follow(self.device)
        return this

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # An unpickled metric (a spawned worker) joins the process's shared networks.
        self._follow(self.loss.net.h_emb.device)

    def _wrap_compute(self, compute: Callable[..., Any]) -> Callable[..., Any]:
        wrapped = super()._wrap_compute(compute)

        # torchmetrics squeezes every one-element tensor of the result to 0-d; per_image is
        # (N,) for every N, one image included.
        @functools.wraps(wrapped)
        def keep_per_image(*args: Any, **kwargs: Any) -> Any:
            out = wrapped(*args, **kwargs)
            if isinstance(out, dict) and "per_image" in out:
                out["per_image"] = out["per_image"].reshape(-1)
            return out

        return keep_per_image

    def _add(self, scores: torch.Tensor) -> None:
        s = scores.detach().to(device=self.score_sum.device, dtype=torch.float64)
        self.score_sum += s.sum()
        self.score_sq_sum += s.square().sum()
        self.count += s.numel()
        if self.return_per_image:
            self.scores.append(scores.detach().float())

    def compute(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The mean score (0-dim float32 tensor), or a dict with ``mean`` and the
        ``std`` (sample, n - 1) / ``per_image`` (N,) entries asked for; NaN before any update."""
        n = self.count.double()
        mean = self.score_sum / n
        if not (self.return_std or self.return_per_image):
            return mean.float()
        out = {"mean": mean.float()}
        if self.return_std:
            var = (self.score_sq_sum - n * mean * mean).clamp_min(0) / (n - 1)
            out["std"] = var.sqrt().float()
        if self.return_per_image:
            kept: list[torch.Tensor] | torch.Tensor = self.scores  # a tensor once synced
            if isinstance(kept, list):
                kept = torch.cat(kept) if kept else torch.zeros(0, device=self.device)
            out["per_image"] = kept
        return out


class TOPIQMetric(_ScoreMetric):
    """Mean TOPIQ-FR quality of predictions against references, higher is better.

    ``update(pred, target)`` adds a batch, ``compute()`` gives the mean of
    :meth:`TOPIQLoss.score <topiq_loss.TOPIQLoss.score>` over every image seen
    (all processes under DDP), ``reset()`` starts over.

    Args:
        weights: ``"kadid"`` (default), ``"pipal"``, a checkpoint path, or
            ``"random"`` / ``None`` (random weights, tests only; warns).
        input_range: (low, high) of pixel values.
        net: a :class:`~topiq_loss.CFANetFR` to use instead of loading ``weights``.
        return_std: ``compute()`` returns ``{"mean", "std"}`` (sample std over images).
        return_per_image: keep every score; ``compute()`` returns ``{"mean", "per_image"}``
            (in update order on one process; gathered rank by rank under DDP).
        cache_dir: where official weights are cached (default torch.hub's).
        progress: show a download progress bar.
        **kwargs: torchmetrics options (``dist_sync_on_step``, ``process_group``, ...).

    Shape:
        - pred, target: (N, 3, H, W) or (N, 1, H, W), H, W >= 32, in ``input_range``.

    Example:
        >>> metric = TOPIQMetric().to(device)  # doctest: +SKIP
        >>> for sr, hr in loader: metric.update(sr, hr)  # doctest: +SKIP
        >>> metric.compute()  # doctest: +SKIP
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
        input_range: tuple[float, float] = (0.0, 1.0),
        net: CFANetFR | None = None,
        return_std: bool = False,
        return_per_image: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> None:
        def build() -> tuple[TOPIQLoss, Hashable | None]:
            if net is not None:
                return TOPIQLoss(net=net, input_range=input_range), None
            return shared_fr_loss(weights, input_range=input_range, cache_dir=cache_dir, progress=progress)

        super().__init__(build, return_std, return_per_image, **kwargs)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the scores of ``pred`` against ``target`` (N, C, H, W)."""
        with torch.no_grad():
            self._add(self.loss.score(pred, target))


class TOPIQNRMetric(_ScoreMetric):
    """Mean no-reference TOPIQ score of images, higher is better.

    ``update(img)`` adds a batch; ``compute()`` gives the mean of
    :meth:`TOPIQNRLoss.score <topiq_loss.TOPIQNRLoss.score>` (raw scores: 0..1 for
    the quality and face entries, 1..10 for ``"ava"`` and ``"ava_swin"``).

    Args:
        weights: an NR name of :func:`~topiq_loss.list_weights` (``"koniq"``, the default;
            ``"spaq"``, ``"flive"``, ``"ava"``, ``"ava_swin"``, ``"face"``, ``"face_v1"``,
            ``"face_swin"``), a checkpoint path, or ``"random"`` / ``None`` (tests only; warns).
        input_range: (low, high) of pixel values.
        resize: short side images are resized to first; ``"auto"`` takes the entry's.
        net: a :class:`~topiq_loss.CFANetNR` to use instead of loading ``weights``.
        return_std: as in :class:`TOPIQMetric`.
        return_per_image: as in :class:`TOPIQMetric`.
        cache_dir: as in :class:`TOPIQMetric`.
        progress: as in :class:`TOPIQMetric`.
        **kwargs: as in :class:`TOPIQMetric`.

    Shape:
        - img: (N, 3, H, W) or (N, 1, H, W), H, W >= 32, in ``input_range``.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = DEFAULT_NR_WEIGHTS,
        input_range: tuple[float, float] = (0.0, 1.0),
        resize: int | None | Literal["auto"] = "auto",
        net: CFANetNR | None = None,
        return_std: bool = False,
        return_per_image: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> None:
        _checks.check_resize(resize, auto=True)  # before a network is built

        def build() -> tuple[TOPIQNRLoss, Hashable | None]:
            if net is not None:
                return TOPIQNRLoss(net=net, input_range=input_range, resize=resize), None
            return shared_nr_loss(
                weights, input_range=input_range, resize=resize, cache_dir=cache_dir, progress=progress
            )

        super().__init__(build, return_std, return_per_image, **kwargs)

    def update(self, img: torch.Tensor) -> None:
        """Add the scores of ``img`` (N, C, H, W)."""
        with torch.no_grad():
            self._add(self.loss.score(img))
