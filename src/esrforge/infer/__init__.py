"""Inference: tiled, memory-bounded upscaling of numpy images."""

from esrforge.infer.upscale import Upscaler, upscale_image

__all__ = ["Upscaler", "upscale_image"]
