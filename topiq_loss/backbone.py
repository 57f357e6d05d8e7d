"""ResNet50 multi-scale feature extractor (the CFANet "semantic model").

The module keeps the official parameters and BatchNorm statistics (that is what
``state_dict()`` saves and loads). When it is frozen, it runs a *fused* copy
instead: every BatchNorm folded into the convolution before it (computed in
float64, rounded once) and, on CPU, convolution weights in channels-last memory.
Same maths, fewer passes over memory; see :meth:`ResNet50Features.set_fused`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from torch.nn.utils import skip_init
from torchvision.models import resnet50

__all__ = ["ResNet50Features", "FEATURE_CHANNELS", "fold_batchnorm"]

#: Channels of the five feature levels: stem, layer1, layer2, layer3, layer4.
FEATURE_CHANNELS: tuple[int, ...] = (64, 256, 512, 1024, 2048)

# (conv, bn) attribute pairs inside a torchvision Bottleneck.
_BLOCK_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    The folded weight and bias are computed in float64 and rounded once to the
    convolution's dtype, so folding adds a single rounding per weight.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("`bn` must track running statistics to be folded")
    mean, var = bn.running_mean.double(), bn.running_var.double()
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    scale = bn.weight.detach().double() / torch.sqrt(var + bn.eps)
    # skip_init: no random initialisation, so folding never draws from the global RNG.
    fused = skip_init(  # type: ignore[no-untyped-call]
        nn.Conv2d,
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(w * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((b - mean) * scale + bn.bias.detach().double())
    return cast(nn.Conv2d, fused.requires_grad_(False))


class _Stages(nn.Module):
    """The five stages of a ResNet50 (stem, then layer1 .. layer4) over its modules."""

    maxpool: nn.Module
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _stage1(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.layer1(self.maxpool(x)))

    def stages(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The five stages in order; each maps one level to the next."""
        return [self._stem, self._stage1, self.layer2, self.layer3, self.layer4]


class _FusedStages(_Stages):
    """The five stages of a ResNet50 with BatchNorm folded away (inference only)."""

    def __init__(self, src: ResNet50Features, channels_last: bool) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.stem = fold_batchnorm(src.conv1, src.bn1)
        self.maxpool = copy.deepcopy(src.maxpool)
        layers = []
        for layer in (src.layer1, src.layer2, src.layer3, src.layer4):
            blocks = []
            for block in layer:
                new = copy.copy(block)  # shallow: torchvision's Bottleneck.forward, new modules
                new._modules = dict(block._modules)
                for conv_name, bn_name in _BLOCK_PAIRS:
                    new._modules[conv_name] = fold_batchnorm(getattr(block, conv_name), getattr(block, bn_name))
                    new._modules[bn_name] = nn.Identity()
                down = cast("nn.Sequential | None", block.downsample)
                if down is not None:
                    new._modules["downsample"] = fold_batchnorm(cast(nn.Conv2d, down[0]), cast(nn.BatchNorm2d, down[1]))
                blocks.append(new)
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.requires_grad_(False).eval()

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.relu(self.stem(x))


def _drop_fused_after_load(module: ResNet50Features, incompatible_keys: object) -> None:
    module._drop_fused()


class ResNet50Features(_Stages):
    """torchvision's ResNet50 without its pooling and classifier, returning 5 levels.

    Parameter names match the ``semantic_model.*`` keys of the official CFANet
    checkpoints (``conv1``, ``bn1``, ``layer1`` .. ``layer4``). BatchNorm layers
    always run on their running statistics, as in the reference, whatever
    ``train()`` says: the model was trained with frozen BN.

    Fast path: while no parameter requires grad (a frozen loss network), the
    forward pass runs a fused copy (see :meth:`set_fused`), rebuilt whenever the
    module is moved or cast, loads a state dict, or its tensors are edited in place.
    With trainable parameters it runs the modules themselves, so gradients reach them.

    Shape:
        - Input: (N, 3, H, W), already ImageNet-normalised.
        - Output: list of 5 tensors with strides 2, 4, 8, 16, 32 and channels
          :data:`FEATURE_CHANNELS`.
    """

    def __init__(self) -> None:
        super().__init__()
        net = resnet50(weights=None)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        # Plain attributes (not submodules): never in state_dict() or parameters().
        self.__dict__["_fuse"] = True
        self.__dict__["_channels_last"] = None
        self.__dict__["_fused"] = None  # (stages, version key)
        self.register_load_state_dict_post_hook(_drop_fused_after_load)  # type: ignore[no-untyped-call]
        self.train(False)

    def train(self, mode: bool = True) -> ResNet50Features:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    # ----------------------------------------------------------------- fast path
    def set_fused(self, enabled: bool = True, channels_last: bool | None = None) -> ResNet50Features:
        """Choose how a frozen backbone runs; returns ``self``.

        Args:
            enabled: fold BatchNorm into the convolutions (default on). Off runs the
                official modules as they are (the reference's arithmetic).
            channels_last: memory format of the fused convolutions; ``None`` (default)
                picks channels-last on CPU, where it measured faster, and contiguous
                elsewhere until measured there.
        """
        self.__dict__["_fuse"] = bool(enabled)
        self.__dict__["_channels_last"] = channels_last
        return self._drop_fused()

    @property
    def fused_enabled(self) -> bool:
        """Whether the fused copy is used when the module is frozen."""
        return bool(self.__dict__["_fuse"])

    def _drop_fused(self) -> ResNet50Features:
        self.__dict__["_fused"] = None
        return self

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> ResNet50Features:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        # Refold from the converted originals (a .double() must fold in float64 again,
        # not widen float32-rounded folded weights).
        return self._drop_fused()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fused"] = None  # rebuilt on first use; keeps pickles small
        return state

    def _version_key(self) -> tuple[int, ...]:
        return tuple(t._version for t in self.state_dict(keep_vars=True).values())

    def _runner(self) -> ResNet50Features | _FusedStages:
        """The fused copy when frozen and enabled, else ``self``."""
        if torch.compiler.is_compiling():
            # Checked in eager mode by the callers (TOPIQLoss prepares it); a compiled
            # graph uses what is there without inspecting tensor versions.
            cached = self.__dict__["_fused"]
            return cached[0] if cached is not None else self
        if not self.__dict__["_fuse"] or any(p.requires_grad for p in self.parameters()):
            return self
        key = self._version_key()
        cached = self.__dict__["_fused"]
        if cached is None or cached[1] != key:
            device = self.conv1.weight.device
            channels_last = self.__dict__["_channels_last"]
            if channels_last is None:
                channels_last = device.type == "cpu"
            # Outside inference mode even when called inside it: a copy built under
            # torch.inference_mode() would hold inference tensors, and the next
            # training step could not save them for backward.
            with torch.inference_mode(False):
                self.__dict__["_fused"] = cached = (_FusedStages(self, channels_last), key)
        return cast(ResNet50Features | _FusedStages, cached[0])

    def prepare(self) -> None:
        """Build (or refresh) the fused copy now, outside any compiled region."""
        self._runner()

    # --------------------------------------------------------------- reference path
    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor, checkpoint: bool = False) -> list[torch.Tensor]:
        """Features of ``x`` at five levels.

        Args:
            x: (N, 3, H, W) normalised images.
            checkpoint: recompute each stage's activations in backward instead of
                storing them (non-reentrant checkpointing); same values and grads.
        """
        feats = []
        # Checkpointing only pays when a graph is being recorded.
        use_cp = checkpoint and torch.is_grad_enabled() and x.requires_grad
        for stage in self._runner().stages():
            x = cp.checkpoint(stage, x, use_reentrant=False) if use_cp else stage(x)
            feats.append(x)
        return feats
