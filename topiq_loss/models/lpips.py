"""The LPIPS network (Zhang et al., CVPR 2018): an ImageNet backbone tapped at five
ReLUs and one trained 1x1 linear layer per tap. No I/O: where its weights come from is
:mod:`topiq_loss.weights.lpips`.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from .. import _checks
from .seeded_init import seeded_init

__all__ = ["NETS", "TAPS", "LPIPSNetwork", "NetName"]

NetName = Literal["alex", "vgg"]
NETS: tuple[str, ...] = ("alex", "vgg")

# (out_channels, kernel, stride, padding) per conv; "M" a 3x3/2 (AlexNet) or 2x2/2 (VGG) max pool.
_ALEX: list[tuple[int, int, int, int] | str] = [
    (64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1),
]
_VGG16: list[tuple[int, int, int, int] | str] = [
    (64, 3, 1, 1), (64, 3, 1, 1), "M", (128, 3, 1, 1), (128, 3, 1, 1), "M",
    (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M",
    (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1), "M",
    (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1),
]
# Index (in torchvision's ``features``) of the ReLU whose output each LPIPS layer taps.
TAPS: dict[str, tuple[int, ...]] = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
def _features(name: str) -> nn.Sequential:
    """torchvision's ``features`` layout (same module indices), randomly initialised."""
    layers: list[nn.Module] = []
    channels = 3
    for spec in _ALEX if name == "alex" else _VGG16:
        if isinstance(spec, str):
            layers.append(nn.MaxPool2d(3, 2) if name == "alex" else nn.MaxPool2d(2, 2))
        else:
            out, k, s, p = spec
            layers += [nn.Conv2d(channels, out, k, s, p), nn.ReLU(inplace=True)]
            channels = out
    return nn.Sequential(*layers)


class LPIPSNetwork(nn.Module):
    """LPIPS v0.1: input scaling, backbone taps and the five linear layers.

    Args:
        net: ``"alex"`` or ``"vgg"`` (VGG16).

    Attributes:
        features: the backbone up to its last tap (torchvision's module indices).
        lins: one bias-free 1x1 convolution (C_m -> 1) per tap.
        grad_checkpointing, backbone_autocast: settings read at each call (see
            :meth:`set_grad_checkpointing`, :meth:`set_backbone_autocast`).
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"`net` must be one of {NETS}; got {net!r}")
        self.net_name = net
        self.taps = TAPS[net]
        # Not from the caller's stream, and the same random weights for a net whatever ran before.
        with seeded_init(f"lpips-{net}:random"):  # the seed of random weights: one per net
            self.features = _features(net)
            # Each tap is a ReLU: its channels are those of the convolution before it.
            chans = [cast(nn.Conv2d, self.features[i - 1]).out_channels for i in self.taps]
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        # LPIPS' fixed input scaling of [-1, 1] images (its "ScalingLayer" constants).
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.grad_checkpointing = False
        self.backbone_autocast = False

    @property
    def dtype(self) -> torch.dtype:
        return self.shift.dtype

    @property
    def device(self) -> torch.device:
        return self.shift.device

    def lin_weights(self) -> list[torch.Tensor]:
        """The linear layers' weights, (1, C_m, 1, 1) each."""
        return [cast(nn.Conv2d, lin).weight for lin in self.lins]

    def set_grad_checkpointing(self, enable: bool = True) -> LPIPSNetwork:
        """Recompute the backbone in backward instead of storing its activations (less
        memory; same values and gradients). Returns ``self``."""
        self.grad_checkpointing = _checks.check_bool(enable, "enable")
        return self

    def set_backbone_autocast(self, enable: bool = True) -> LPIPSNetwork:
        """Under ``torch.autocast``, let the backbone run in half precision too (default
        off: it stays in the network's dtype). Returns ``self``."""
        self.backbone_autocast = _checks.check_bool(enable, "enable")
        return self

    def set_autocast(self, enable: bool = True) -> LPIPSNetwork:
        """Opt in to half precision under ``torch.autocast`` (the backbone; the distances
        are always computed in at least float32). Default off. Costs input-gradient
        accuracy, as :meth:`~topiq_loss.models.trunk.CFANetTrunk.set_autocast` says.
        Returns ``self``."""
        return self.set_backbone_autocast(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped activations (N, C_m, h_m, w_m) of ``x`` (N, 3, H, W) in [-1, 1],
        under this network's checkpointing and autocast settings."""
        device = x.device.type
        if torch.is_autocast_enabled(device) and not self.backbone_autocast:
            with torch.autocast(device, enabled=False):
                return self._run(x)
        return self._run(x)

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad:
            return cp.checkpoint(self._taps, x, use_reentrant=False)
        return self._taps(x)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):  # the features end at the last tap
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out
