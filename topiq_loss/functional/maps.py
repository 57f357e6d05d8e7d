"""Quality maps: where TOPIQ-FR looks, as in the paper's visualisations.

Two kinds of map per scale, both upsampled to the input size:

- the gated-local-pooling (GLP) gate, predicted from ``|F_dist - F_ref|`` at each
  backbone level: which locations' features enter the pooled representation;
- the cross-scale attention each location of a level receives from the
  semantic (layer4) queries in the top-down attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..models.cfanet_fr import CFANetFR
from ..models.trunk import CFANetFeatures
from .fr import prepare_pair

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["LEVELS", "QualityMaps", "maps_from_features", "quality_maps", "render_maps"]

LEVELS = ("stem", "layer1", "layer2", "layer3", "layer4")


@dataclass
class QualityMaps:
    """Per-scale maps of one TOPIQ-FR pass, at the input resolution.

    Attributes:
        score: (N,) quality, higher is better.
        gates: one (N, 1, H, W) map per level of :data:`LEVELS`, values in [0, 1].
        cross_attention: one (N, 1, H, W) map per memory level ``stem`` .. ``layer3``:
            the attention mass each location receives from the layer4 queries,
            averaged over heads and queries. At the token grid each map sums to 1;
            upsampled, values stay within the grid's range.
    """

    score: torch.Tensor
    gates: list[torch.Tensor]
    cross_attention: list[torch.Tensor]


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # Bilinear (not bicubic): a convex combination, so gates stay within [0, 1].
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def quality_maps(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    net: CFANetFR,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> QualityMaps:
    """Score and per-scale gate / cross-attention maps of ``pred`` against ``target``.

    Args:
        pred: (N, C, H, W), C in (1, 3), H, W >= 32, values in ``input_range``.
        target: reference images, same shape.
        net: the frozen network (e.g. ``TOPIQLoss().net``).
        input_range: (low, high) of the pixel values.

    Returns:
        :class:`QualityMaps` (no gradients), maps of shape (N, 1, H, W), float32.
    """
    p, t = prepare_pair(pred, target, net, input_range)
    return maps_from_features(net.forward_features(p, t, need_maps=True), (pred.shape[-2], pred.shape[-1]))


def maps_from_features(feats: CFANetFeatures, size: tuple[int, int]) -> QualityMaps:
    """Upsample a pass's gates and cross-attention (FR or NR) to ``size``."""
    gates = [_upsample(g.detach(), size) for g in feats.gates]
    # forward_features lists the cross-attention steps top-down (layer3 .. stem).
    cross = [_upsample(c.detach().unsqueeze(1), size) for c in reversed(feats.cross_attention)]
    return QualityMaps(score=feats.score.detach().float(), gates=gates, cross_attention=cross)


def _heat(m: torch.Tensor, grey: torch.Tensor, alpha: float = 0.6) -> torch.Tensor:
    """Colour-map ``m`` (1, H, W) (min-max scaled) over the grey image (1, H, W)."""
    from kornia.color import ColorMap, apply_colormap

    lo, hi = m.min(), m.max()
    scaled = (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)
    colour = apply_colormap(scaled.unsqueeze(0), ColorMap("turbo", num_colors=256))[0]
    return alpha * colour + (1 - alpha) * grey.expand(3, -1, -1)


def render_maps(
    dist: torch.Tensor, ref: torch.Tensor | None, maps: QualityMaps, index: int = 0, panel: int = 256
) -> PILImage:
    """A labelled PIL image of one sample's maps, overlaid on the distorted image.

    Rows: DIST, REF, |DIST - REF| (the image alone for a no-reference pass, ``ref``
    None); the gate per level; the cross-scale attention received per level. Each
    map is min-max scaled for display (turbo colour map).

    Args:
        dist: (N, 3, H, W) images in [0, 1] (as given to :func:`quality_maps`).
        ref: the references, or None for the maps of :meth:`TOPIQNRLoss.quality_maps`.
        maps: the result of :func:`quality_maps` for them.
        index: which sample of the batch.
        panel: longest side of each panel in pixels.
    """
    from PIL import Image, ImageDraw

    d = dist[index].detach().float().cpu().clamp(0, 1)
    if d.shape[0] == 1:
        d = d.expand(3, -1, -1)
    grey = d.mean(dim=0, keepdim=True)
    if ref is None:
        first = [("IMAGE", d)]
    else:
        r = ref[index].detach().float().cpu().clamp(0, 1)
        r = r.expand(3, -1, -1) if r.shape[0] == 1 else r
        diff = (d - r).abs().mean(dim=0, keepdim=True)
        first = [("DIST", d), ("REF", r), ("|DIST - REF|", _heat(diff, grey, alpha=1.0))]
    rows = [
        first,
        [(f"gate {name}", _heat(g[index].cpu(), grey)) for name, g in zip(LEVELS, maps.gates, strict=True)],
        [
            (f"attention on {name}", _heat(c[index].cpu(), grey))
            for name, c in zip(LEVELS, maps.cross_attention, strict=False)
        ],
    ]
    h, w = d.shape[-2:]
    k = panel / max(h, w)
    ph, pw = max(1, round(h * k)), max(1, round(w * k))
    label = 14
    cols = max(len(row) for row in rows)
    canvas = Image.new("RGB", (cols * pw, len(rows) * (ph + label)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        for j, (title, img) in enumerate(row):
            arr = img.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
            tile = Image.fromarray(arr).resize((pw, ph), Image.Resampling.BILINEAR)
            x, y = j * pw, i * (ph + label)
            canvas.paste(tile, (x, y + label))
            draw.text((x + 2, y + 1), title, fill="black")
    score = float(maps.score[index])
    draw.text(((cols - 1) * pw + 2, 1), f"score {score:.4f}", fill="black")
    return canvas
