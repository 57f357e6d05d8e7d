"""ResNet50 multi-scale feature extractor (the CFANet "semantic model")."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from torchvision.models import resnet50

__all__ = ["ResNet50Features", "FEATURE_CHANNELS"]

#: Channels of the five feature levels: stem, layer1, layer2, layer3, layer4.
FEATURE_CHANNELS: tuple[int, ...] = (64, 256, 512, 1024, 2048)


class ResNet50Features(nn.Module):
    """torchvision's ResNet50 without its pooling and classifier, returning 5 levels.

    Parameter names match the ``semantic_model.*`` keys of the official CFANet
    checkpoints (``conv1``, ``bn1``, ``layer1`` .. ``layer4``). BatchNorm layers
    always run on their running statistics, as in the reference, whatever
    ``train()`` says: the model was trained with frozen BN.

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
        self.train(False)

    def train(self, mode: bool = True) -> ResNet50Features:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def _stage1(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(self.maxpool(x))

    def stages(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The five stages in order; each maps the previous level to the next."""
        return [self._stem, self._stage1, self.layer2, self.layer3, self.layer4]

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
        for stage in self.stages():
            x = cp.checkpoint(stage, x, use_reentrant=False) if use_cp else stage(x)
            feats.append(x)
        return feats
