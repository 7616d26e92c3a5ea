"""Unsharp masking, as Real-ESRGAN applies it to HR targets (and as a degradation step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from esrforge.data.filters import gaussian_blur
from esrforge.data.steps import Context, Range, Step, per_sample_tensor, range_field


def usm_sharpen(x: Tensor, weight: Tensor | float = 0.5, radius: int = 50, threshold: float = 10.0) -> Tensor:
    """Real-ESRGAN's USM: add weight * (x - blur(x)) where the detail exceeds `threshold`
    (in 0-255 levels), blending through a blurred mask so the edit has no hard edge.
    radius 50 -> a 51 px Gaussian with OpenCV's automatic sigma for that size."""
    size = radius + 1 if radius % 2 == 0 else radius
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    residual = x - gaussian_blur(x, size, sigma)
    mask = (residual.abs() * 255 > threshold).to(x.dtype)
    soft = gaussian_blur(mask, size, sigma)
    w = per_sample_tensor(torch.as_tensor(weight).expand(x.shape[0]), x) if not isinstance(weight, float) else weight
    sharp = (x + w * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * x


@dataclass(frozen=True)
class Sharpen(Step):
    """`{type: sharpen, amount: [0.3, 0.7], radius: 50, threshold: 10}`"""

    name = "sharpen"
    amount: Range = range_field(0.5, lo=0.0, hi=5.0, doc="weight of the added detail")
    radius: Range = range_field(50, lo=1, hi=200, integer=True, doc="Gaussian kernel size in pixels, as Real-ESRGAN's radius (an even one + 1)")
    threshold: Range = range_field(10, lo=0, hi=255, doc="detail below this (0-255 levels) is left alone")

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        n = x.shape[0]
        amount = self.amount.sample(g, n)
        # One radius and threshold per batch keeps the kernel shared (one conv).
        radius = int(self.radius.sample(g).item())
        threshold = float(self.threshold.sample(g).item())
        y = usm_sharpen(x, amount, radius, threshold)
        return y, [f"sharpen {a:.2f} r{radius}" for a in amount.tolist()]
