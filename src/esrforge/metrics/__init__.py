"""Image quality metrics as super-resolution papers report them."""

from esrforge.metrics.psnr_ssim import psnr, psnr_torch, rgb_to_y, ssim, ssim_torch

__all__ = ["psnr", "psnr_torch", "rgb_to_y", "ssim", "ssim_torch"]
