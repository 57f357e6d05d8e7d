"""BasicSR's validation metrics for TOPIQ: ``calculate_topiq`` and ``calculate_topiq_nr``
(registered by :mod:`topiq_loss.integrations.basicsr`)."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import torch

from ..weights.registry import DEFAULT_NR_WEIGHTS, DEFAULT_WEIGHTS
from ._common import numpy_image, score_fr, score_nr

__all__ = ["calculate_topiq", "calculate_topiq_nr"]

_log = logging.getLogger("topiq_loss.integrations.basicsr")

_Y_NOTE = "test_y_channel is ignored by calculate_topiq*: TOPIQ scores the colour image"
_noted_y = False


def _note_y(test_y_channel: bool) -> None:
    global _noted_y
    if test_y_channel and not _noted_y:
        _noted_y = True
        _log.warning(_Y_NOTE)


def calculate_topiq(
    img: Any,
    img2: Any,
    crop_border: int = 0,
    input_order: Literal["HWC", "CHW"] = "HWC",
    test_y_channel: bool = False,
    weights: str | os.PathLike[str] = DEFAULT_WEIGHTS,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> float:
    """TOPIQ-FR quality of ``img`` against ``img2``, higher is better (BasicSR metric).

    Args:
        img, img2: BasicSR validation images: (H, W, C) numpy arrays in BGR order with
            values 0..255 (uint8 or float), as ``tensor2img`` gives them.
        crop_border: pixels dropped at each edge first (at least 32x32 must remain).
        input_order: ``"HWC"`` or ``"CHW"``.
        test_y_channel: ignored (logged once): TOPIQ scores colour images.
        weights: ``"kadid"`` (default), ``"pipal"``, a checkpoint path or ``"random"`` (tests only).
        device: where the network runs; default CUDA when available. One network is
            built per (weights, device) and process, then reused.
    """
    _note_y(test_y_channel)
    x = numpy_image(img, "img", input_order, crop_border)
    y = numpy_image(img2, "img2", input_order, crop_border)
    return score_fr(x, y, weights, device)


def calculate_topiq_nr(
    img: Any,
    crop_border: int = 0,
    input_order: Literal["HWC", "CHW"] = "HWC",
    test_y_channel: bool = False,
    weights: str | os.PathLike[str] = DEFAULT_NR_WEIGHTS,
    resize: int | None | Literal["auto"] = "auto",
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> float:
    """No-reference TOPIQ score of ``img`` (BasicSR metric; ``img2`` is ignored).

    Args: as :func:`calculate_topiq`, with ``weights`` an NR name (``"koniq"``, the
    default; ``"spaq"``, ``"flive"``, ``"ava"``, ``"ava_swin"``, ``"face"``, ``"face_v1"``,
    ``"face_swin"``) or a path, and ``resize`` as in
    :class:`~topiq_loss.TOPIQNRLoss`.
    """
    _note_y(test_y_channel)
    return score_nr(numpy_image(img, "img", input_order, crop_border), weights, device, resize)
