"""Colour depth reduction: plain quantisation (posterize) and dithering.

    {type: quantize, levels: [8, 64]}
    {type: dither, method: [ordered, floyd_steinberg], levels: [4, 32], bayer: [2, 8]}
    {type: dither, method: floyd_steinberg, palette: [16, 256]}

`levels` means uniform levels per channel, 0 and 1 included. With `palette` set, each sample's
colours are first reduced to a palette of that many colours (k-means on the CPU, seeded from the
generator, rounded to 8 bits, like a GIF), and dithering picks the nearest palette entry.

Error diffusion is sequential in scan order, but pixel (y, x) only needs pixels whose
x + 2y is smaller (its left neighbours and the row above up to x + 1), so every anti-diagonal
wavefront x + 2y = t is done at once, vectorised over batch, channels and the wavefront: about
W + 2H tensor steps per batch, on any device.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from esrforge.data.steps import (
    Choice,
    Context,
    PipelineError,
    Range,
    Step,
    _where,
    choice_field,
    per_sample_tensor,
    range_field,
)

METHODS = ("ordered", "floyd_steinberg", "atkinson")
_SHORT = {"ordered": "bayer", "floyd_steinberg": "fs", "atkinson": "atkinson"}

# (dy, dx, weight): pixel (y, x) receives weight * the error of pixel (y - dy, x - dx).
# Every source has dx + 2 * dy >= 1, i.e. lies on an earlier wavefront.
DIFFUSION_KERNELS: dict[str, tuple[tuple[int, int, float], ...]] = {
    "floyd_steinberg": ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16)),
    # Atkinson spreads only 6/8 of the error: flatter, higher-contrast look (classic Mac).
    "atkinson": ((0, 1, 1 / 8), (0, 2, 1 / 8), (1, -1, 1 / 8), (1, 0, 1 / 8), (1, 1, 1 / 8), (2, 0, 1 / 8)),
}


def _steps_of(levels: Tensor | int, x: Tensor) -> Tensor:
    """(N, 1, 1, 1) number of steps between levels (L - 1) on x's device."""
    t = torch.as_tensor(levels, dtype=torch.float64)
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    if bool((t < 2).any()):
        raise ValueError(f"levels must be >= 2, got {t.tolist()}")
    return per_sample_tensor(t - 1, x)


def quantize(x: Tensor, levels: Tensor | int) -> Tensor:
    """Uniform levels per channel (per sample): round(x * (L - 1)) / (L - 1)."""
    s = _steps_of(levels, x)
    return (x.clamp(0, 1) * s).round() / s


def bayer_matrix(n: int) -> Tensor:
    """The n x n Bayer index matrix (values 0 .. n*n - 1), n a power of two."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Bayer size must be a power of two, got {n}")
    m = torch.zeros(1, 1, dtype=torch.long)
    while m.shape[0] < n:
        m = torch.cat([torch.cat([4 * m, 4 * m + 2], 1), torch.cat([4 * m + 3, 4 * m + 1], 1)], 0)
    return m


def _threshold_map(sizes: list[int], h: int, w: int) -> Tensor:
    """(N, 1, H, W) thresholds (i + 0.5) / n^2 in (0, 1), each sample's matrix tiled."""
    out = torch.empty(len(sizes), 1, h, w, dtype=torch.float64)
    for i, n in enumerate(sizes):
        m = (bayer_matrix(n).double() + 0.5) / (n * n)
        out[i, 0] = m[torch.arange(h) % n][:, torch.arange(w) % n]
    return out


def nearest_colour(v: Tensor, palette: Tensor) -> Tensor:
    """v (N, P, C), palette (N, K, C) -> (N, P, C): each point's nearest palette entry."""
    n, p, c = v.shape
    out = torch.empty_like(v)
    chunk = max(1, (1 << 22) // max(1, n * palette.shape[1] * c))  # bound the (N, P, K, C) temporary
    for s in range(0, p, chunk):
        d = ((v[:, s : s + chunk, None, :] - palette[:, None]) ** 2).sum(-1)
        idx = d.argmin(-1)  # ties -> first entry, on CPU and CUDA alike
        out[:, s : s + chunk] = torch.gather(palette, 1, idx.unsqueeze(-1).expand(-1, -1, c))
    return out


def kmeans_palette(
    x: Tensor, sizes: Tensor | list[int], g: torch.Generator, iters: int = 8, max_pixels: int = 4096
) -> Tensor:
    """A palette of sizes[i] colours per sample: `iters` k-means steps (squared RGB distance)
    started from k pixel positions picked by `g`, on at most `max_pixels` pixels drawn by `g`;
    computed on the CPU in float64 so CPU and GPU get the same palette; entries rounded to 8 bits.

    Returns (N, max(sizes), C) on x's device; shorter palettes repeat their first entry (the
    padding adds no new colour)."""
    sizes = [int(k) for k in (sizes.tolist() if isinstance(sizes, Tensor) else sizes)]
    pts_all = x.detach().to("cpu", torch.float64).clamp(0, 1).flatten(2).transpose(1, 2)  # N, HW, C
    kmax = max(sizes)
    pals = []
    for pts, k in zip(pts_all, sizes):
        if pts.shape[0] > max_pixels:
            pts = pts[torch.randint(pts.shape[0], (max_pixels,), generator=g)]
        init = torch.randperm(pts.shape[0], generator=g)[:k]
        centres = pts[init.repeat(math.ceil(k / init.numel()))[:k]].clone()
        for _ in range(iters):
            # |p - c|^2 up to the per-point constant |p|^2: one matmul (float64 keeps it exact enough).
            a = ((centres * centres).sum(1) - 2 * pts @ centres.T).argmin(1)
            sums = torch.zeros_like(centres).index_add_(0, a, pts)
            count = torch.bincount(a, minlength=k).unsqueeze(1)
            centres = torch.where(count > 0, sums / count.clamp(min=1), centres)  # empty: keep
        centres = (centres * 255).round() / 255
        pals.append(torch.cat([centres, centres[:1].expand(kmax - k, -1)]))
    return torch.stack(pals).to(device=x.device, dtype=torch.float32)


def _palette_spread(palette: Tensor) -> Tensor:
    """(N,) mean distance from each palette entry to its nearest distinct entry: the step an
    ordered dither must bridge (0 for a one-colour palette)."""
    d = torch.cdist(palette.double(), palette.double())
    d = torch.where(d > 1e-9, d, torch.full_like(d, math.inf)).amin(-1)
    finite = torch.isfinite(d)
    return torch.where(finite, d, torch.zeros_like(d)).sum(-1) / finite.sum(-1).clamp(min=1)


def ordered_dither(
    x: Tensor,
    levels: Tensor | int | None = None,
    sizes: Tensor | list[int] | int = 4,
    palette: Tensor | None = None,
) -> Tensor:
    """Bayer ordered dithering to `levels` per channel, or to the nearest entry of `palette`
    (N, K, C); `sizes` is the Bayer matrix size per sample (2, 4, 8)."""
    n, c, h, w = x.shape
    if isinstance(sizes, int):
        sizes = [sizes] * n
    sizes = [int(s) for s in (sizes.tolist() if isinstance(sizes, Tensor) else sizes)]
    t = _threshold_map(sizes, h, w).to(device=x.device, dtype=torch.float32)
    xf = x.float().clamp(0, 1)
    if palette is None:
        if levels is None:
            raise ValueError("ordered_dither needs levels or a palette")
        s = _steps_of(levels, xf)
        return ((xf * s + t).floor().clamp(min=0).minimum(s) / s).to(x.dtype)
    spread = per_sample_tensor(_palette_spread(palette.cpu()), xf)  # on the CPU: same value on any device
    v = xf + (t - 0.5) * spread
    q = nearest_colour(v.flatten(2).transpose(1, 2), palette.to(xf.device, torch.float32))
    return q.transpose(1, 2).reshape(n, c, h, w).to(x.dtype)


@functools.lru_cache(maxsize=32)
def _wavefronts(h: int, w: int, method: str) -> tuple[Tensor, Tensor, Tensor, list[int], int]:
    """Scan plan for error diffusion: pixel indices sorted by wavefront x + 2y, their indices in
    the padded error buffer, each kernel source's buffer index, the wavefront boundaries and
    the buffer length."""
    kern = DIFFUSION_KERNELS[method]
    top = max(dy for dy, _, _ in kern)
    left = max(max(dx for _, dx, _ in kern), 0)
    right = max(max(-dx for _, dx, _ in kern), 0)
    wp = w + left + right
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    wave = (xx + 2 * yy).flatten()
    order = torch.argsort(wave, stable=True)
    ys, xs = yy.flatten()[order], xx.flatten()[order]
    pix = ys * w + xs
    tgt = (ys + top) * wp + xs + left
    src = torch.stack([tgt - dy * wp - dx for dy, dx, _ in kern])  # (K, HW)
    bounds = torch.cumsum(torch.bincount(wave), 0).tolist()
    return pix, tgt, src, [0, *bounds], (h + top) * wp


def error_diffusion(
    x: Tensor,
    levels: Tensor | int | None = None,
    method: str = "floyd_steinberg",
    palette: Tensor | None = None,
) -> Tensor:
    """Error-diffusion dithering (floyd_steinberg or atkinson, raster order) to `levels` per
    channel, or to the nearest entry of `palette` (N, K, C) with the error diffused in RGB."""
    n, c, h, w = x.shape
    kern = DIFFUSION_KERNELS[method]
    pix, tgt, src, bounds, length = _wavefronts(h, w, method)
    pix, tgt, src = pix.to(x.device), tgt.to(x.device), src.to(x.device)
    xf = x.float().clamp(0, 1).flatten(2)  # N, C, HW
    err = torch.zeros(n, c, length, device=x.device)
    out = torch.empty_like(xf)
    if palette is None:
        if levels is None:
            raise ValueError("error_diffusion needs levels or a palette")
        s = _steps_of(levels, xf).view(n, 1, 1)
    else:
        pal = palette.to(x.device, torch.float32)
    k = len(kern)
    for a, b in zip(bounds[:-1], bounds[1:]):
        p, e = pix[a:b], tgt[a:b]
        got = err.index_select(2, src[:, a:b].reshape(-1)).view(n, c, k, b - a)
        v = xf.index_select(2, p)
        for i, (_, _, wgt) in enumerate(kern):  # sequential adds: same rounding on every device
            v = v + got[:, :, i] * wgt
        if palette is None:
            q = (v * s).round().clamp(min=0).minimum(s) / s  # 0 and 1 are levels: |error| <= half a step
        else:
            # Out-of-gamut palettes would let the error grow without bound; clamp the target.
            v = v.clamp(0, 1)
            q = nearest_colour(v.transpose(1, 2), pal).transpose(1, 2)
        err.index_copy_(2, e, v - q)
        out.index_copy_(2, p, q)
    return out.view(n, c, h, w).to(x.dtype)


def _palette_field() -> Any:
    # Optional: unset (None) means per-channel levels. Parsed like any integer range.
    return field(
        default=None,
        metadata={
            "kind": "range",
            "lo": 2,
            "hi": 256,
            "integer": True,
            "odd": False,
            "doc": "palette size (colours); unset: per-channel levels",
        },
    )


@dataclass(frozen=True)
class Quantize(Step):
    """`{type: quantize, levels: [8, 64]}`: posterize to uniform levels per channel."""

    name = "quantize"
    levels: Range = range_field((8, 64), lo=2, hi=256, integer=True, doc="levels per channel")

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        levels = self.levels.sample(g, x.shape[0])
        return quantize(x, levels), [f"quantize {int(v)} levels" for v in levels.tolist()]


@dataclass(frozen=True)
class Dither(Step):
    """`{type: dither, method: [ordered, floyd_steinberg], levels: [4, 32], bayer: 4, palette: [16, 64]}`"""

    name = "dither"
    method: Choice = choice_field("floyd_steinberg", allowed=METHODS, doc="ordered (Bayer) or error diffusion")
    levels: Range = range_field((4, 32), lo=2, hi=256, integer=True, doc="levels per channel (without palette)")
    bayer: Range = range_field(4, lo=2, hi=8, integer=True, doc="ordered: Bayer matrix size, 2, 4 or 8")
    palette: Range | None = _palette_field()

    def check(self, index: int) -> None:
        for v in (self.bayer.low, self.bayer.high):
            if v not in (2, 4, 8):
                where = _where(index, self.name, "bayer")
                raise PipelineError(f"{where}: sizes must be powers of two in [2, 8] (2, 4 or 8), got {v:g}")

    def _sample_bayer(self, g: torch.Generator, n: int) -> list[int]:
        # Uniform over the powers of two in [low, high]: draw the exponent.
        lo, hi = math.ceil(math.log2(max(self.bayer.low, 1))), math.floor(math.log2(max(self.bayer.high, 1)))
        return [2 ** int(e) for e in Range(lo, max(lo, hi), integer=True).sample(g, n).tolist()]

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        n = x.shape[0]
        # Parameters are drawn for every sample in a fixed order; only then the palette's draws.
        methods = self.method.sample(g, n)
        levels = self.levels.sample(g, n).long()
        bayer = self._sample_bayer(g, n)
        sizes = self.palette.sample(g, n).long() if self.palette is not None else None
        pal = kmeans_palette(x, sizes, g) if sizes is not None else None
        out = x.clone()
        for m in METHODS:
            idx = [i for i, mm in enumerate(methods) if mm == m]
            if not idx:
                continue
            it = torch.tensor(idx)
            sub, lv, pl = x[it.to(x.device)], levels[it], None if pal is None else pal[it.to(pal.device)]
            if m == "ordered":
                y = ordered_dither(sub, lv, [bayer[i] for i in idx], pl)
            else:
                y = error_diffusion(sub, lv, m, pl)
            out[it.to(x.device)] = y
        labels = []
        for i, m in enumerate(methods):
            how = _SHORT[m] + (str(bayer[i]) if m == "ordered" else "")
            what = f"palette {int(sizes[i])}" if sizes is not None else f"{int(levels[i])} levels"
            labels.append(f"dither {how} {what}")
        return out, labels
