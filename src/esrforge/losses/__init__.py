"""Training losses: pixel, perceptual (VGG19, no torchvision), GAN (optionally relativistic),
discriminator feature matching."""

from __future__ import annotations

from esrforge.losses.feature_matching import FeatureMatchingLoss, discriminator_features
from esrforge.losses.gan import GANLoss
from esrforge.losses.perceptual import PerceptualLoss, VGG19Features, load_vgg19_weights
from esrforge.losses.pixel import PixelLoss

__all__ = [
    "FeatureMatchingLoss",
    "GANLoss",
    "PerceptualLoss",
    "PixelLoss",
    "VGG19Features",
    "discriminator_features",
    "load_vgg19_weights",
]
