"""``TOPIQNRLoss``: the frozen no-reference TOPIQ network (quality or aesthetics) as a loss."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal, cast

import torch

from .. import _checks
from ..functional.fr import Reduction, reduce_loss
from ..functional.maps import QualityMaps, maps_from_features
from ..functional.nr import topiq_nr, topiq_nr_features, topiq_nr_loss
from ..functional.objectives import Objective, check_objective
from ..functional.robust import RandomTransforms
from ..models.cfanet_nr import CFANetNR
from ..models.trunk import CFANetFeatures
from ..weights.builder import build_network, weights_entry
from ..weights.registry import DEFAULT_NR_WEIGHTS
from .frozen import FrozenNetworkLoss
from .holder import weights_label

__all__ = ["TOPIQNRLoss", "build_nr_network"]

def build_nr_network(
    weights: str | os.PathLike[str] | None = DEFAULT_NR_WEIGHTS,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CFANetNR:
    """A frozen CFANet-NR in eval mode with ``weights`` loaded (see :class:`TOPIQNRLoss`):
    :func:`~topiq_loss.build_network` taking quality (``"nr"``) or aesthetics (``"iaa"``)
    weights.

    Raises:
        WeightsError: the file is not a CFANet-NR checkpoint (a full-reference file is
            named as such), or cannot be downloaded or read.
    """
    return cast(CFANetNR, build_network(weights, ("nr", "iaa"), cache_dir=cache_dir, progress=progress))


class TOPIQNRLoss(FrozenNetworkLoss):
    """No-reference TOPIQ loss of one image, or of a restoration against its ground truth.

    ``nr(img)``: ``loss_weight * reduce((best - score) / (best - worst))``, 0 at the
    best score of every entry, 1 at the worst (quality models: score 0..1; AVA
    aesthetics: expected rating 1..10), for training without ground truth.
    ``nr(pred, target)`` (default ``objective="anchored"``):
    ``loss_weight * reduce(rho((score(target) - score(pred)) / (best - worst)))``, 0 with
    a zero gradient at ``pred == target``: as natural as the ground truth, not more.
    Frozen like :class:`~topiq_loss.TOPIQLoss`.

    Args:
        weights: ``"koniq"`` (default), ``"spaq"``, ``"flive"``, ``"ava"`` (aesthetics),
            ``"ava_swin"`` (Swin-B aesthetics), ``"face"``, ``"face_v1"``, ``"face_swin"``
            (aligned face crops), a checkpoint path (quality or aesthetics layout, read from its tensors), or
            ``None`` (random quality weights, tests only; warns).
        objective: ``"anchored"`` (default; a ``target`` is compared with) or
            ``"score"`` (the image alone; a ``target`` is refused).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch.
        loss_weight: multiplies the loss.
        input_range: (low, high) of pixel values.
        resize: short side images are resized to first (antialiased, aspect kept);
            ``"auto"`` takes the entry's (384 for flive and ava, 512 for face and
            face_v1, none for koniq/spaq, the Swin entries (their network resizes to
            384x384 itself) and files); None scores images as given.
        score_range: (worst, best) of the score; ``"auto"`` takes the entry's ((0, 1),
            or (1, 10) for an aesthetics layout).
        robust: the random-transformation ensemble, as in TOPIQLoss (each image
            transformed on its own): ``True`` or a :class:`RandomTransforms`.
        check_values: NaN/inf and range checks with one host sync per call (default);
            ``False`` makes none.
        keep_in_state_dict: save the network in ``state_dict`` (under ``_net.``; never in ``modules()``).
        net: a :class:`CFANetNR` to use instead of loading ``weights``; frozen in place
            (its tensors become buffers).
        cache_dir: where official weights are cached.
        progress: show a download progress bar.

    Network settings as on :class:`~topiq_loss.TOPIQLoss`
    (``set_grad_checkpointing()``, ``set_backbone_autocast()``).

    Shape:
        - img: (N, 3, H, W) or (N, 1, H, W), H, W >= 32, floating point, in ``input_range``.
        - target: None, or the same shape as ``img``.
        - Output: scalar, or (N,) with ``reduction="none"``.

    Example:
        >>> nr = TOPIQNRLoss()  # doctest: +SKIP
        >>> loss = l1 + 0.05 * nr(sr)  # doctest: +SKIP
    """

    #: A loss: lower is better (the torchmetrics attribute frameworks check).
    higher_is_better = False

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = DEFAULT_NR_WEIGHTS,
        objective: Objective = "anchored",
        *,
        reduction: Reduction = "mean",
        loss_weight: float = 1.0,
        input_range: tuple[float, float] = (0.0, 1.0),
        resize: int | None | Literal["auto"] = "auto",
        score_range: tuple[float, float] | Literal["auto"] = "auto",
        robust: bool | RandomTransforms = False,
        check_values: bool = True,
        keep_in_state_dict: bool = False,
        net: CFANetNR | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        objective = check_objective(objective)
        resize = _checks.check_resize(resize, auto=True)  # before a network is built
        progress = _checks.check_bool(progress, "progress")
        entry = None
        label = weights_label(weights, given=net is not None)
        if net is None:
            net = cast(CFANetNR, build_network(weights, ("nr", "iaa"), cache_dir=cache_dir, progress=progress))
            entry = weights_entry(net)
        super().__init__(
            net, CFANetNR, objective=objective, weights_name=label, reduction=reduction, loss_weight=loss_weight,
            input_range=input_range, robust=robust, check_values=check_values, keep_in_state_dict=keep_in_state_dict,
        )
        self.resize: int | None = (entry.resize if entry is not None else None) if resize == "auto" else resize
        if score_range == "auto":
            aesthetics = self.net.num_class > 1
            score_range = entry.score_range if entry is not None else ((1.0, 10.0) if aesthetics else (0.0, 1.0))
        self.score_range = _checks.check_input_range(score_range, name="score_range")

    @property
    def net(self) -> CFANetNR:
        """The frozen :class:`CFANetNR`."""
        return cast(CFANetNR, super().net)

    def _repr_fields(self) -> list[str]:
        return [f"resize={self.resize}", f"score_range={self.score_range}"]

    def forward(self, img: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``img`` (N, C, H, W), alone or against ``target``; 0 is best.
        Gradients flow to ``img`` (and to ``target`` if it requires grad)."""
        return self.loss_weight * reduce_loss(self.loss_values(img, target), self.reduction)

    def loss_values(
        self, img: torch.Tensor, target: torch.Tensor | None = None, check_values: bool | None = None
    ) -> torch.Tensor:
        """(N,) unweighted, unreduced loss (see the class); with ``robust=True`` the mean
        over the random transforms, each applied to ``img`` and ``target`` alike.
        ``check_values`` overrides the loss's setting for this call."""
        check = self.check_values if check_values is None else check_values

        def values(x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
            return topiq_nr_loss(
                x, t, net=self.net, objective=self.objective, score_range=self.score_range, reduction="none",
                input_range=self.input_range, resize=self.resize, check_values=False,
            )

        if not self.robust or (target is not None and self.objective == "score"):
            out = values(img, target)  # (the latter refuses the target, before any transform)
        else:
            out = self._robust(values, img, target)
        return self._checked(out, check, img, target)

    def score(self, img: torch.Tensor) -> torch.Tensor:
        """(N,) raw score of ``img``, higher is better (within ``score_range``, about);
        the ensemble mean with ``robust=True``."""

        def nr(x: torch.Tensor) -> torch.Tensor:
            return topiq_nr(x, net=self.net, input_range=self.input_range, resize=self.resize, check_values=False)

        return self._checked(nr(img) if not self.robust else self._robust(nr, img), self.check_values, img)

    def _robust(self, fn: Callable[..., torch.Tensor], img: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """The ensemble mean of ``fn`` on ``img`` (and ``target``)."""
        if target is None:
            _checks.check_image(img, "img", values=False)
        else:
            _checks.check_pair(img, target, pred_name="img", target_name="target", values=False)
        return self._ensemble(fn, *((img,) if target is None else (img, target)))

    def _checked(
        self, out: torch.Tensor, check: bool, img: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``out`` after the call's one value check (inputs and result), when ``check``; the
        range warning is once per loss (this object), not per network, which others may share."""
        if check:
            images = [(img, "img")] if target is None else [(img, "img"), (target, "target")]
            names = " and ".join(f"`{n}`" for _, n in images)
            _checks.check_values(images, out, names, self.input_range, owner=self)
        return out

    def features(self, img: torch.Tensor) -> CFANetFeatures:
        """Score with the gated convolutions' gates and cross-scale attention (native resolution)."""
        return topiq_nr_features(img, net=self.net, input_range=self.input_range, resize=self.resize)

    @torch.no_grad()
    def quality_maps(self, img: torch.Tensor) -> QualityMaps:
        """Per-scale gates and cross-scale attention, upsampled to (N, 1, H, W) of ``img``."""
        return maps_from_features(self.features(img), (img.shape[-2], img.shape[-1]))
