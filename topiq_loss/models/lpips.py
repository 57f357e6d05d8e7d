"""The LPIPS network (Zhang et al., CVPR 2018): an ImageNet backbone tapped at five
ReLUs and one trained 1x1 linear layer per tap, and where its weights come from.

Backbones: torchvision's ImageNet AlexNet / VGG16 ``features``, fetched through
torchvision's own weights API and cache. Linear layers (v0.1): the files shipped in
the ``lpips`` package (BSD-2), read from its install folder without importing it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp

from .hub import WeightsError
from .seeded_init import seeded_init
from .weights import RANDOM
from .weights_file import check_tensors, classify_weights, read_weights_file

__all__ = ["LPIPSNetwork", "build_lpips_network", "lpips_network_from_module"]

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
_TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_FITS = "a trained LPIPS network"
#: The package whose data holds the linear layers (a module-level name so tests can hide it).
LPIPS_PACKAGE = "lpips"


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
        with seeded_init(f"lpips-{net}:{RANDOM}"):
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
        self.grad_checkpointing = bool(enable)
        return self

    def set_backbone_autocast(self, enable: bool = True) -> LPIPSNetwork:
        """Under ``torch.autocast``, let the backbone run in half precision too (default
        off: it stays in the network's dtype). Returns ``self``."""
        self.backbone_autocast = bool(enable)
        return self

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


def _lin_index(key: str) -> int | None:
    m = re.fullmatch(r"lins?\.?(\d)\.(?:model\.\d\.)?weight", key)
    return int(m.group(1)) if m else None


def load_lpips_state(network: LPIPSNetwork, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state dict in ``lpips.LPIPS``'s layout (``net.sliceK.I.*``, ``linK.model.J.weight``;
    also pyiqa's) or this network's own; raises :class:`WeightsError` naming what is missing."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        lin = _lin_index(key)
        m = re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", key)
        if lin is not None:
            mapped[f"lins.{lin}.weight"] = value
        elif m:
            mapped[f"features.{m.group(1)}.{m.group(2)}"] = value
        elif key.startswith(("features.", "shift", "scale")):
            mapped[key] = value
    own = network.state_dict()
    missing = sorted(k for k in own if k not in mapped and k not in ("shift", "scale"))
    wrong = [f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in mapped and mapped[k].shape != own[k].shape]
    if missing or wrong:
        raise WeightsError(
            f"{source} is not an LPIPS-{network.net_name} state dict: "
            + "; ".join(p for p in (f"missing {missing[:4]}" if missing else "", f"shapes {wrong[:3]}" if wrong else "") if p)
        )
    network.load_state_dict({k: v for k, v in mapped.items() if k in own}, strict=False)


def lpips_package_lins(net: str) -> Path:
    """The v0.1 linear-layer file inside the installed ``lpips`` package (not imported)."""
    spec = importlib.util.find_spec(LPIPS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"the LPIPS linear layers (lpips/weights/v0.1/{net}.pth) ship with the `lpips` package, "
            f"which is not installed: `pip install lpips` (or `pip install topiq-loss[lpips]`), or pass "
            f"weights='/path/to/lpips_{net}_state.pth' (a saved lpips.LPIPS state dict), or build with "
            f"LPIPSPlusLoss.from_lpips(lpips_module)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise WeightsError(f"the installed `lpips` package has no {path}: reinstall it (`pip install lpips`)")
    return path


def _torchvision_backbone(net: str, progress: bool) -> dict[str, Any]:
    import torchvision.models as tvm

    enum = tvm.AlexNet_Weights.IMAGENET1K_V1 if net == "alex" else tvm.VGG16_Weights.IMAGENET1K_V1
    try:
        state: dict[str, Any] = enum.get_state_dict(progress=progress)
    except Exception as exc:  # torchvision's download raises URLError, OSError, RuntimeError...
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsError(
            f"could not get torchvision's ImageNet {'AlexNet' if net == 'alex' else 'VGG16'} weights "
            f"({type(exc).__name__}: {exc}). LPIPS-{net} needs two files: {_TORCHVISION_FILES[net]} "
            f"(backbone, {enum.url}) and lpips/weights/v0.1/{net}.pth (linear layers, in the `lpips` "
            f"package). Offline: place {_TORCHVISION_FILES[net]} in {cache}, or pass "
            f"weights='/path/to/lpips_{net}_state.pth' (torch.save(lpips.LPIPS(net={net!r}).state_dict(), "
            f"path) on a connected machine), or build with LPIPSPlusLoss.from_lpips(lpips_module)"
        ) from exc
    return {k: v for k, v in state.items() if k.startswith("features.")}


def build_lpips_network(
    net: str = "alex", weights: str | os.PathLike[str] | None = "default", progress: bool = True
) -> LPIPSNetwork:
    """A frozen :class:`LPIPSNetwork` in eval mode.

    Args:
        net: ``"alex"`` or ``"vgg"``.
        weights: ``"default"`` (torchvision's ImageNet backbone + the ``lpips`` package's
            v0.1 linear layers), a path to a saved ``lpips.LPIPS`` state dict (backbone and
            linear layers), or ``"random"`` / ``None`` (random backbone and non-negative
            random linear layers, seeded from ``net``: tests only; warns).
        progress: torchvision's download progress bar.

    Raises:
        WeightsError: ``lpips`` is not installed, the backbone cannot be downloaded, or
            a file (or torchvision's tensors) is not a valid LPIPS state dict of ``net``:
            every file is read by :func:`~topiq_loss.weights_file.read_weights_file`.
            :class:`~topiq_loss.weights.WeightsArgumentError` (a ValueError) for an
            empty string, a folder or an unknown name;
            :class:`~topiq_loss.weights.WeightsFileNotFoundError` for a missing file.
    """
    expected = f"'default', {RANDOM!r} (or None) or an existing file (a saved lpips.LPIPS state dict)"
    what, value = classify_weights(weights, ("default",), expected)
    network = LPIPSNetwork(net)
    if what == "random":
        warnings.warn(
            f"LPIPS-{net} built with weights={RANDOM!r}: RANDOM backbone and linear layers, distances are "
            f"meaningless. Use this for tests only.",
            UserWarning,
            stacklevel=3,
        )
        with torch.no_grad():
            for w in network.lin_weights():
                w.abs_()  # trained LPIPS layers are non-negative: keep distances >= 0
    elif what == "name":
        lins = lpips_package_lins(net)  # first: no download when the package is missing
        state = read_weights_file(lins, _FITS, source=f"the lpips package's linear-layer file {lins}")
        tv = _TORCHVISION_FILES[net]
        state.update(check_tensors(_torchvision_backbone(net, progress), f"torchvision's {tv} (in its hub cache)", _FITS))
        load_lpips_state(network, state, f"torchvision {net} + {lins}")
    else:
        path = Path(str(value))
        load_lpips_state(network, read_weights_file(path, _FITS), str(path))
    return network.requires_grad_(False).eval()


def lpips_network_from_module(module: nn.Module) -> LPIPSNetwork:
    """A frozen copy of an ``lpips.LPIPS`` (or pyiqa ``LPIPS``) module's weights.

    The module must use LPIPS v0.1 with its linear layers (``lpips=True``) on an
    ``"alex"`` or ``"vgg"`` trunk; its weights are copied, the module is not kept.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"`module` must be an lpips.LPIPS module; got {type(module).__name__}")
    kind = getattr(module, "pnet_type", None)
    kind = "vgg" if kind == "vgg16" else kind
    if kind not in NETS:
        raise ValueError(f"`module` must be an lpips.LPIPS with net='alex' or 'vgg'; got net={kind!r}")
    if getattr(module, "version", "0.1") != "0.1" or not getattr(module, "lpips", True):
        raise ValueError("`module` must be LPIPS v0.1 with linear layers (version='0.1', lpips=True)")
    network = LPIPSNetwork(str(kind))
    state = {k: v.detach().to("cpu", torch.float32) for k, v in module.state_dict().items()}
    check_tensors(state, f"{type(module).__name__}(net={kind!r})", _FITS)
    load_lpips_state(network, state, f"{type(module).__name__}(net={kind!r})")
    return network.requires_grad_(False).eval()
