"""LPIPS weights, read by the one weights reader: torchvision's ImageNet AlexNet / VGG16 backbones (its own
weights API and cache) and the v0.1 linear layers shipped in the ``lpips`` package (BSD-2), not imported."""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._errors import WeightsError
from ..models.lpips import NETS, LPIPSNetwork
from .reader import check_tensors, classify_weights, read_weights_file
from .registry import RANDOM

__all__ = ["LPIPSNetwork", "build_lpips_network", "load_lpips_state", "lpips_network_from_module", "lpips_package_lins"]

_FITS = "a trained LPIPS network"
#: The package whose data holds the linear layers (a module-level name so tests can hide it).
LPIPS_PACKAGE = "lpips"


def load_lpips_state(network: LPIPSNetwork, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state dict in ``lpips.LPIPS``'s layout (``net.sliceK.I.*``, ``linK.model.J.weight``;
    also pyiqa's) or this network's own; raises :class:`WeightsError` naming what is missing."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if lin := re.fullmatch(r"lins?\.?(\d)\.(?:model\.\d\.)?weight", key):
            mapped[f"lins.{lin.group(1)}.weight"] = value
        elif m := re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", key):
            mapped[f"features.{m.group(1)}.{m.group(2)}"] = value
        elif key.startswith(("features.", "shift", "scale")):
            mapped[key] = value
    own = network.state_dict()
    missing = sorted(k for k in own if k not in mapped and k not in ("shift", "scale"))
    wrong = [f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in mapped and mapped[k].shape != own[k].shape]
    if missing or wrong:
        parts = ([f"missing {missing[:4]}"] if missing else []) + ([f"shapes {wrong[:3]}"] if wrong else [])
        raise WeightsError(f"{source} is not an LPIPS-{network.net_name} state dict: " + "; ".join(parts))
    network.load_state_dict({k: v for k, v in mapped.items() if k in own}, strict=False)


def lpips_package_lins(net: str) -> Path:
    """The v0.1 linear-layer file inside the installed ``lpips`` package (not imported)."""
    spec = importlib.util.find_spec(LPIPS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"the LPIPS linear layers (lpips/weights/v0.1/{net}.pth) ship with the `lpips` package, which is not "
            f"installed: `pip install lpips` (or `pip install topiq-loss[lpips]`), or pass weights='/path/to/lpips_"
            f"{net}_state.pth' (a saved lpips.LPIPS state dict), or build with LPIPSPlusLoss.from_lpips(lpips_module)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    if not path.is_file():
        raise WeightsError(f"the installed `lpips` package has no {path}: reinstall it (`pip install lpips`)")
    return path


def _torchvision_backbone(net: str, progress: bool) -> dict[str, torch.Tensor]:
    import torchvision.models as tvm

    enum = tvm.AlexNet_Weights.IMAGENET1K_V1 if net == "alex" else tvm.VGG16_Weights.IMAGENET1K_V1
    file = enum.url.rsplit("/", 1)[-1]
    try:
        state: dict[str, Any] = enum.get_state_dict(progress=progress)
    except Exception as exc:  # torchvision's download raises URLError, OSError, RuntimeError...
        raise WeightsError(
            f"could not get torchvision's ImageNet {'AlexNet' if net == 'alex' else 'VGG16'} weights "
            f"({type(exc).__name__}: {exc}). LPIPS-{net} needs two files: {file} (backbone, {enum.url}) and "
            f"lpips/weights/v0.1/{net}.pth (linear layers, in the `lpips` package). Offline: place {file} in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}, or pass weights='/path/to/lpips_{net}_state.pth' "
            f"(torch.save(lpips.LPIPS(net={net!r}).state_dict(), path) on a connected machine), or build with "
            f"LPIPSPlusLoss.from_lpips(lpips_module)"
        ) from exc
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    return check_tensors(features, f"torchvision's {file} (in its hub cache)", _FITS)


def build_lpips_network(
    net: str = "alex", weights: str | os.PathLike[str] | None = "default", progress: bool = True
) -> LPIPSNetwork:
    """A frozen :class:`LPIPSNetwork` (``net``: ``"alex"`` or ``"vgg"``) in eval mode.

    ``weights``: ``"default"`` (torchvision's backbone + the ``lpips`` package's linear layers), a saved
    ``lpips.LPIPS`` state dict, or ``"random"`` / ``None`` (seeded from ``net``; tests only, warns).
    Raises WeightsError (``lpips`` missing, no download, a bad state dict), or what ``classify_weights`` raises.
    """
    expected = f"'default', {RANDOM!r} (or None) or an existing file (a saved lpips.LPIPS state dict)"
    what, value = classify_weights(weights, ("default",), expected)
    network = LPIPSNetwork(net)
    if what == "random":
        warnings.warn(f"LPIPS-{net} built with weights={RANDOM!r}: RANDOM backbone and linear layers, distances "
                      f"are meaningless. Use this for tests only.", UserWarning, stacklevel=3)
        with torch.no_grad():
            for w in network.lin_weights():
                w.abs_()  # trained LPIPS layers are non-negative: keep distances >= 0
    elif what == "name":
        lins = lpips_package_lins(net)  # first: no download when the package is missing
        state = read_weights_file(lins, _FITS, source=f"the lpips package's linear-layer file {lins}")
        state.update(_torchvision_backbone(net, progress))
        load_lpips_state(network, state, f"torchvision {net} + {lins}")
    else:
        load_lpips_state(network, read_weights_file(Path(str(value)), _FITS), str(value))
    return network.requires_grad_(False).eval()


def lpips_network_from_module(module: nn.Module) -> LPIPSNetwork:
    """A frozen copy of the weights of an ``lpips.LPIPS`` (or pyiqa ``LPIPS``) v0.1 module on an alex or vgg trunk."""
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
