"""Recipes for restoration training: pixel + perceptual mixtures, SR and denoising
losses, GAN objectives.
"""

from __future__ import annotations

from .gan import GeneratorLoss, adversarial_d_loss, adversarial_g_loss
from .mixing import MixedLoss
from .restoration import DenoiseLoss, SRLoss, pixel_loss

__all__ = [
    "DenoiseLoss",
    "GeneratorLoss",
    "MixedLoss",
    "SRLoss",
    "adversarial_d_loss",
    "adversarial_g_loss",
    "pixel_loss",
]
