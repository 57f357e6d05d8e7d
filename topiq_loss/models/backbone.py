"""ResNet50 multi-scale feature extractor (the CFANet "semantic model").

The module holds the official parameters and BatchNorm statistics, and nothing else:
what ``state_dict()`` saves and loads is what runs. By default each call folds every
BatchNorm into the convolution before it (``bn(conv(x))`` with frozen statistics *is*
one convolution) and runs the folded weights: fewer passes over memory, same maths.
The fold is recomputed at every call from the module's current tensors, so there is
no second copy that an edit, a load, a cast or a move could leave behind; it costs
about 10 ms per call on a 2-core CPU (measured; the ResNet50 step there is 0.3-1.5 s).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from .. import _checks

if TYPE_CHECKING:
    from torchvision.models.resnet import Bottleneck

__all__ = ["ResNet50Features", "FEATURE_CHANNELS", "fold_batchnorm"]

#: Channels of the five feature levels: stem, layer1, layer2, layer3, layer4.
FEATURE_CHANNELS: tuple[int, ...] = (64, 256, 512, 1024, 2048)


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the one convolution equal to ``bn(conv(x))``, ``bn`` in eval mode.

    The per-channel scale and shift are computed in float64 (the shift
    ``beta - mean * scale`` cancels), then rounded once; the weight is the
    convolution's times the rounded scale, in its own dtype (a float64 product there
    cost 4x the time per call and changed no result beyond one rounding).
    Differentiable: gradients reach ``conv`` and ``bn``'s parameters.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("`bn` must track running statistics to be folded")
    w = conv.weight
    wide = torch.promote_types(w.dtype, torch.float64)
    scale = bn.weight.to(wide) * torch.rsqrt(bn.running_var.to(wide) + bn.eps)
    shift = bn.bias.to(wide) - bn.running_mean.to(wide) * scale
    if conv.bias is not None:
        shift = shift + conv.bias.to(wide) * scale
    return w * scale.to(w.dtype).view(-1, 1, 1, 1), shift.to(w.dtype)


def _conv(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))`` as one folded convolution."""
    weight, bias = fold_batchnorm(conv, bn)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _folded_block(block: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    """A torchvision Bottleneck with its BatchNorms folded (same maths as ``block(x)``)."""
    out = _conv(x, block.conv1, block.bn1).relu_()
    out = _conv(out, block.conv2, block.bn2).relu_()
    out = _conv(out, block.conv3, block.bn3)
    down = cast("nn.Sequential | None", block.downsample)
    identity = x if down is None else _conv(x, cast(nn.Conv2d, down[0]), cast(nn.BatchNorm2d, down[1]))
    return out.add_(identity).relu_()


class ResNet50Features(nn.Module):
    """torchvision's ResNet50 without its pooling and classifier, returning 5 levels.

    Parameter names match the ``semantic_model.*`` keys of the official CFANet
    checkpoints (``conv1``, ``bn1``, ``layer1`` .. ``layer4``). BatchNorm layers
    always run on their running statistics, as in the reference, whatever
    ``train()`` says: the model was trained with frozen BN. Frozen or trainable, the
    same path runs; gradients reach every parameter when they require grad.

    Settings live on the module (timm style), not in the call:
    :meth:`set_fused` (fold BatchNorm, memory format) and
    :meth:`set_grad_checkpointing`.

    Shape:
        - Input: (N, 3, H, W), already ImageNet-normalised.
        - Output: list of 5 tensors with strides 2, 4, 8, 16, 32 and channels
          :data:`FEATURE_CHANNELS`.
    """

    #: Channels of the levels (what a CFANet front is sized by).
    channels: tuple[int, ...] = FEATURE_CHANNELS
    #: Images are taken at any size (no resize by the trunk).
    input_size: tuple[int, int] | None = None

    def __init__(self) -> None:
        super().__init__()
        # Imported here, not at the top: torchvision's import loads torch._dynamo (its ops
        # module), about half of what `import topiq_loss` cost, which a CLI `--help` or a
        # weights download never needs.
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.fuse = True
        self.channels_last: bool | None = None
        self.grad_checkpointing = False
        self.train(False)

    def train(self, mode: bool = True) -> ResNet50Features:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def set_fused(self, enabled: bool = True, channels_last: bool | None = None) -> ResNet50Features:
        """Choose the arithmetic of the convolutions; returns ``self``.

        Args:
            enabled: fold BatchNorm into the convolutions at each call (default on).
                Off runs the official modules one by one (the reference's arithmetic).
            channels_last: run the folded convolutions in channels-last memory;
                ``None`` (default) picks it on CPU, where it measured faster, and
                contiguous elsewhere until measured there.
        """
        self.fuse = _checks.check_bool(enabled, "enabled")
        self.channels_last = _checks.check_optional_bool(channels_last, "channels_last")
        return self

    @property
    def fused_enabled(self) -> bool:
        """Whether BatchNorm is folded into the convolutions."""
        return self.fuse

    def set_grad_checkpointing(self, enable: bool = True) -> ResNet50Features:
        """Recompute each stage's activations in backward instead of storing them
        (non-reentrant checkpointing; same values and gradients); returns ``self``."""
        self.grad_checkpointing = _checks.check_bool(enable, "enable")
        return self

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fuse:
            return cast(torch.Tensor, self.relu(self.bn1(self.conv1(x))))
        channels_last = self.channels_last if self.channels_last is not None else x.device.type == "cpu"
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return _conv(x, self.conv1, self.bn1).relu_()

    def _stage1(self, x: torch.Tensor) -> torch.Tensor:
        return self._layer(self.layer1, self.maxpool(x))

    def _layer(self, layer: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if not self.fuse:
            return cast(torch.Tensor, layer(x))
        for block in layer:
            x = _folded_block(cast("Bottleneck", block), x)
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of ``x`` (N, 3, H, W) at five levels."""
        stages: list[Callable[[torch.Tensor], torch.Tensor]] = [
            self._stem,
            self._stage1,
            partial(self._layer, self.layer2),
            partial(self._layer, self.layer3),
            partial(self._layer, self.layer4),
        ]
        # Checkpointing only pays when a graph is being recorded.
        use_cp = self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad
        feats = []
        for stage in stages:
            x = cp.checkpoint(stage, x, use_reentrant=False) if use_cp else stage(x)
            feats.append(x)
        return feats
