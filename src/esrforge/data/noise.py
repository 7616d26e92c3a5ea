"""Additive and multiplicative noise: Gaussian, Poisson (Real-ESRGAN's), salt & pepper, speckle.

    {type: noise, kind: {gaussian: 0.5, poisson: 0.5}, sigma: [1, 30], poisson_scale: [0.05, 3], gray_p: 0.4}

Every random tensor is drawn on the CPU from the generator handed in and then moved to the
image's device, so a seed gives the same noise on CPU and GPU. The pure functions below take
explicit per-sample parameters (a (N,) tensor or one number for all) and a per-sample `gray`
flag (the same noise on every channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from esrforge.data.steps import Choice, Context, Range, Step, choice_field, number_field, per_sample_tensor, range_field

KINDS = ("gaussian", "poisson", "salt_pepper", "speckle")


def _per_sample(v: Tensor | float, x: Tensor) -> Tensor:
    t = torch.as_tensor(v, dtype=torch.float64)
    return per_sample_tensor(t.expand(x.shape[0]) if t.ndim == 0 else t, x)


def _gray_mask(gray: Tensor | bool, n: int) -> Tensor:
    """(N, 1, 1, 1) bool on the CPU."""
    t = torch.as_tensor(gray, dtype=torch.bool)
    return (t.expand(n) if t.ndim == 0 else t).cpu().view(-1, 1, 1, 1)


def _share_gray(noise: Tensor, gray: Tensor | bool) -> Tensor:
    """Samples flagged gray take channel 0's noise on every channel. All channels are drawn
    either way, so the number of draws does not depend on the flags."""
    m = _gray_mask(gray, noise.shape[0])
    return torch.where(m, noise[:, :1].expand_as(noise), noise)


def _to(t: Tensor, x: Tensor) -> Tensor:
    return t.to(device=x.device, dtype=x.dtype)


def gaussian_noise(x: Tensor, sigma: Tensor | float, gray: Tensor | bool, g: torch.Generator) -> Tensor:
    """x + N(0, sigma / 255), sigma in 0-255 levels per sample; clamped to [0, 1]."""
    n = torch.randn(x.shape, generator=g, dtype=torch.float32)
    n = _to(_share_gray(n, gray), x)
    return (x + n * (_per_sample(sigma, x) / 255)).clamp(0, 1)


def _poisson_residual(img: Tensor, g: torch.Generator) -> Tensor:
    """Real-ESRGAN's Poisson noise for img (N, c, H, W) on the CPU: the photon count is the
    number of distinct 8-bit values in the sample rounded up to a power of two, so flat images
    get coarse (strong) noise and rich ones fine noise. Returns poisson(img*vals)/vals - img."""
    img = (img.clamp(0, 1) * 255).round() / 255
    counts = [2.0 ** math.ceil(math.log2(max(int(torch.unique(s).numel()), 1))) for s in img]
    vals = torch.tensor(counts, dtype=img.dtype).view(-1, 1, 1, 1)
    return torch.poisson(img * vals, generator=g) / vals - img


def _luma(x: Tensor) -> Tensor:
    """(N, 1, H, W): BT.601 luma of RGB, the mean of other channel counts."""
    if x.shape[1] >= 3:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        return (x[:, :3] * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def poisson_noise(x: Tensor, scale: Tensor | float, gray: Tensor | bool, g: torch.Generator) -> Tensor:
    """x + scale * (Real-ESRGAN Poisson residual); gray samples use the residual of the luma on
    every channel. Sampled on the CPU (torch.poisson needs the generator's device)."""
    xc = x.detach().to("cpu", torch.float32)
    noise = _poisson_residual(xc, g)
    m = _gray_mask(gray, x.shape[0])
    if bool(m.any()):
        gray_noise = _poisson_residual(_luma(xc), g).expand_as(noise)
        noise = torch.where(m, gray_noise, noise)
    return (x + _to(noise, x) * _per_sample(scale, x)).clamp(0, 1)


def salt_pepper_noise(x: Tensor, amount: Tensor | float, gray: Tensor | bool, g: torch.Generator) -> Tensor:
    """Replace a fraction `amount` of pixels by 0 or 1 (even odds). Colour samples hit each
    channel independently; gray samples hit whole pixels with one value."""
    hit = torch.rand(x.shape, generator=g, dtype=torch.float32)
    salt = torch.rand(x.shape, generator=g, dtype=torch.float32) < 0.5
    hit, salt = _to(_share_gray(hit, gray), x), _share_gray(salt, gray).to(x.device)
    return torch.where(hit < _per_sample(amount, x), salt.to(x.dtype), x).clamp(0, 1)


def speckle_noise(x: Tensor, std: Tensor | float, gray: Tensor | bool, g: torch.Generator) -> Tensor:
    """Multiplicative noise x * (1 + N(0, std)): strong in highlights, none in black."""
    n = torch.randn(x.shape, generator=g, dtype=torch.float32)
    n = _to(_share_gray(n, gray), x)
    return (x + x * n * _per_sample(std, x)).clamp(0, 1)


@dataclass(frozen=True)
class Noise(Step):
    """`{type: noise, kind: [gaussian, poisson], sigma: [1, 30], gray_p: 0.4}`"""

    name = "noise"
    kind: Choice = choice_field("gaussian", allowed=KINDS, doc="noise kind, a list, or name: weight")
    sigma: Range = range_field((1, 30), lo=0, hi=255, doc="gaussian: std in 0-255 levels")
    poisson_scale: Range = range_field((0.05, 3.0), lo=0, hi=20, doc="poisson: multiplier of the noise")
    amount: Range = range_field((0.001, 0.02), lo=0, hi=1, doc="salt_pepper: fraction of pixels hit")
    speckle: Range = range_field((0.02, 0.2), lo=0, hi=5, doc="speckle: std of the multiplicative noise")
    gray_p: float = number_field(0.0, lo=0.0, hi=1.0, doc="probability that the noise is the same on all channels")

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        n = x.shape[0]
        # Every parameter is drawn for every sample, in a fixed order, whatever the kinds drawn.
        kinds = self.kind.sample(g, n)
        gray = torch.rand(n, generator=g) < self.gray_p
        params = {
            "gaussian": self.sigma.sample(g, n),
            "poisson": self.poisson_scale.sample(g, n),
            "salt_pepper": self.amount.sample(g, n),
            "speckle": self.speckle.sample(g, n),
        }
        fns = {
            "gaussian": gaussian_noise,
            "poisson": poisson_noise,
            "salt_pepper": salt_pepper_noise,
            "speckle": speckle_noise,
        }
        out = x.clone()
        for kind in KINDS:  # a fixed kind order: the draws depend only on what was drawn above
            idx = [i for i, k in enumerate(kinds) if k == kind]
            if not idx:
                continue
            it = torch.tensor(idx)
            out[it.to(x.device)] = fns[kind](x[it.to(x.device)], params[kind][it], gray[it], g)
        colour = x.shape[1] > 1  # "gray" only means something with several channels
        labels = []
        for i, kind in enumerate(kinds):
            v = float(params[kind][i])
            tag = " gray" if colour and bool(gray[i]) else ""
            desc = {
                "gaussian": f"s={v:.1f}",
                "poisson": f"scale={v:.2f}",
                "salt_pepper": f"{v * 100:.2f}%",
                "speckle": f"s={v:.3f}",
            }[kind]
            labels.append(f"noise {kind}{tag} {desc}")
        return out, labels
