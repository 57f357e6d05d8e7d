"""What the framework plugs share: numpy images to tensors, one network per process,
float32 under autocast, and inputs brought up to the network's minimum size."""

from __future__ import annotations

import difflib
import functools
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import _checks
from ..losses.fr import TOPIQLoss
from ..losses.lpips import LPIPSPlusLoss
from ..losses.nr import TOPIQNRLoss
from ..losses.shared import shared_fr_loss, shared_nr_loss
from ..weights.registry import RANDOM, is_random

__all__ = [
    "LPIPSPlusPlug", "as_float32", "cached_fr", "cached_nr", "check_count", "check_plug_options", "metric_device",
    "numpy_image", "plug_options", "score_fr", "score_nr", "upsample_to_min",
]

MIN_SIZE = _checks.MIN_SIZE


def numpy_image(
    img: Any, name: str, input_order: str = "HWC", crop_border: int = 0, bgr: bool = True
) -> torch.Tensor:
    """A framework's numpy image as a (1, C, H, W) float32 tensor in [0, 1].

    Args:
        img: (H, W, C), (C, H, W) with ``input_order="CHW"``, or (H, W) grey; uint8,
            uint16, or float in the 0..255 range (BasicSR's convention for metrics).
        name: the argument's name, for errors.
        input_order: ``"HWC"`` or ``"CHW"``.
        crop_border: pixels dropped at each edge before scoring.
        bgr: the channels are in BGR order (OpenCV's), flipped to RGB.
    """
    if not isinstance(img, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy.ndarray image; got {type(img).__name__}")
    if input_order not in ("HWC", "CHW"):
        raise ValueError(f"`input_order` must be 'HWC' or 'CHW'; got {input_order!r}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"`crop_border` must be an int >= 0; got {crop_border!r}")
    if img.ndim == 2:
        img = img[..., None]
    elif img.ndim == 3 and input_order == "CHW":
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(
            f"`{name}` must be (H, W), (H, W, 1|3) or, with input_order='CHW', (1|3, H, W); got shape {img.shape}"
        )
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    h, w = img.shape[:2]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(
            f"`{name}` must be at least {MIN_SIZE}x{MIN_SIZE} pixels after crop_border={crop_border}; got {h}x{w}"
        )
    if img.dtype == np.uint8 or img.dtype == np.uint16:
        scale = float(np.iinfo(img.dtype).max)
    elif np.issubdtype(img.dtype, np.floating):
        scale = 255.0
    else:
        raise TypeError(f"`{name}` must be uint8, uint16 or float (0..255); got dtype {img.dtype}")
    if bgr and img.shape[2] == 3:
        img = img[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None] / scale
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -0.01 or hi > 1.01:
        raise ValueError(
            f"`{name}` must hold values in 0..{scale:g} (dtype {img.dtype}); got min {lo * scale:g}, max {hi * scale:g}"
        )
    return x


def plug_options(plug: type) -> list[str]:
    """The options a plug's YAML/TOML block may hold: the named parameters of every
    ``__init__`` in its classes, the framework-facing class first."""
    names: list[str] = []
    for klass in plug.__mro__:
        if klass in (nn.Module, object):
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                names.append(p.name)
    return names


def check_plug_options(plug: type, unknown: Mapping[str, Any]) -> None:
    """The one option parser of every plug: ``unknown`` holds the keys of the user's block
    that no parameter took (a plug's ``**kwargs``); any of them is refused, listing the valid
    ones. A typo (``wieghts: pipal``) must not train silently with the defaults.

    Raises:
        TypeError: naming the first unknown key, a close valid one, and every valid one.
    """
    if not unknown:
        return
    valid = plug_options(plug)
    keys = sorted(map(str, unknown))
    close = difflib.get_close_matches(keys[0], valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    more = f" (and {', '.join(map(repr, keys[1:]))})" if len(keys) > 1 else ""
    raise TypeError(f"{plug.__name__}: unknown option {keys[0]!r}{hint}{more}; valid: {', '.join(valid)}")


def check_count(value: object, name: str) -> int:
    """An int >= 1 under the user's own option name (``robust_samples``, not the
    ``samples`` it becomes inside)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1; got {value!r}")
    return value


def metric_device(device: Any = None) -> torch.device:
    """``device``, or CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# One frozen network per (weights, device) and process: validation loops call a metric
# per image, and rebuilding ResNet50 each time costs seconds. The cached losses keep
# their networks alive; the networks are the ones TOPIQMetric / TOPIQNRMetric share
# (topiq_loss.losses.shared), so a plug and a metric in one process hold one network.
@functools.lru_cache(maxsize=4)
def cached_fr(weights: str, device: torch.device) -> TOPIQLoss:
    """The process's TOPIQ-FR loss for ``weights`` on ``device``."""
    return shared_fr_loss(weights, device)[0]


@functools.lru_cache(maxsize=4)
def cached_nr(weights: str, device: torch.device, resize: Any = "auto") -> TOPIQNRLoss:
    """The process's TOPIQ-NR loss for ``weights`` on ``device``."""
    return shared_nr_loss(weights, device, resize=resize)[0]


def _key(weights: str | os.PathLike[str] | None) -> str:
    # Both spellings of random weights share one cached network.
    return RANDOM if weights is None or is_random(weights) else os.fspath(weights)


def score_fr(img: torch.Tensor, img2: torch.Tensor, weights: Any, device: Any) -> float:
    """TOPIQ-FR score of ``img`` against ``img2`` ((1, C, H, W) in [0, 1])."""
    _checks.check_pair(img, img2, pred_name="img", target_name="img2")
    dev = metric_device(device)
    loss = cached_fr(_key(weights), dev)
    with torch.inference_mode():
        return float(loss.score(img.to(dev), img2.to(dev)).mean())


def score_nr(img: torch.Tensor, weights: Any, device: Any, resize: Any = "auto") -> float:
    """TOPIQ-NR score of ``img`` ((1, C, H, W) in [0, 1])."""
    dev = metric_device(device)
    loss = cached_nr(_key(weights), dev, resize)
    with torch.inference_mode():
        return float(loss.score(img.to(dev)).mean())


def upsample_to_min(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images bilinearly enlarged, aspect kept, so that the short side is at least
    the network's 32 pixels; images already large enough are returned as they are."""
    h, w = pred.shape[-2:]
    if pred.dim() != 4 or min(h, w) >= MIN_SIZE or min(h, w) == 0:
        return pred, target
    factor = MIN_SIZE / min(h, w)
    size = (max(MIN_SIZE, round(h * factor)), max(MIN_SIZE, round(w * factor)))

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    return up(pred), (up(target) if target.shape == pred.shape else target)


def as_float32(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn(pred, target)`` run in float32 with autocast off on the inputs' device (what
    ``torch.amp.custom_fwd(cast_inputs=torch.float32)`` does, for any device type)."""

    @functools.wraps(fn)
    def wrapped(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not isinstance(pred, torch.Tensor):
            return fn(pred, target)  # let the loss's own checks name the argument
        with torch.autocast(pred.device.type, enabled=False):
            cast = [x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in (pred, target)]
            return fn(cast[0], cast[1])

    return wrapped


class LPIPSPlusPlug(nn.Module):
    """What the plugs' LPIPS+ losses share: the options, the frozen loss, eval mode, and
    per-sample values in float32 with autocast off (as the frameworks' own losses run),
    inputs under 32 pixels enlarged. Each plug adds its framework's ``forward``.

    Args:
        loss_weight: the framework's loss weight.
        net: ``"alex"`` (default) or ``"vgg"``.
        weights: ``"default"`` (torchvision's ImageNet backbone + LPIPS v0.1 linear
            layers, downloaded; needs the ``lpips`` extra), a path to a saved
            ``lpips.LPIPS`` state dict, or ``"random"`` (tests only).
        semantic_layer: the tap whose target activations weight the maps (0..4; 2, the
            paper's choice, by default).
        input_range: (low, high) of pixel values.
        checkpoint: gradient checkpointing (less memory).
        lpips: a prebuilt :class:`~topiq_loss.LPIPSPlusLoss` to use instead.
        **kwargs: refused, listing the valid options (a typo must not train with the defaults).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        net: str = "alex",
        weights: str | os.PathLike[str] = "default",
        semantic_layer: int = 2,
        input_range: tuple[float, float] = (0.0, 1.0),
        checkpoint: bool = False,
        lpips: LPIPSPlusLoss | None = None,
        **kwargs: Any,
    ) -> None:
        check_plug_options(type(self), kwargs)  # before a network is built
        super().__init__()
        self.loss_weight = _checks.check_loss_weight(loss_weight)
        checkpoint = _checks.check_bool(checkpoint, "checkpoint")
        if lpips is None:
            lpips = LPIPSPlusLoss(
                net=net, weights=weights, semantic_layer=semantic_layer, input_range=input_range
            ).set_grad_checkpointing(checkpoint)
        elif not isinstance(lpips, LPIPSPlusLoss):
            raise TypeError(f"`lpips` must be an LPIPSPlusLoss or None; got {type(lpips).__name__}")
        self.lpips = lpips

    def train(self, mode: bool = True) -> LPIPSPlusPlug:
        return super().train(False)

    def loss_values(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N,) LPIPS+ distances of ``pred`` (N, C, H, W) to ``target``, unweighted."""
        return as_float32(self._values)(pred, target)

    def _values(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = upsample_to_min(pred, target)
        return self.lpips.score(pred, target)
