"""Training losses: pixel, perceptual (VGG19, no torchvision), GAN (optionally relativistic)."""

from __future__ import annotations

from esrforge.losses.gan import GANLoss
from esrforge.losses.perceptual import PerceptualLoss, VGG19Features, load_vgg19_weights
from esrforge.losses.pixel import PixelLoss

__all__ = ["GANLoss", "PerceptualLoss", "PixelLoss", "VGG19Features", "load_vgg19_weights"]
