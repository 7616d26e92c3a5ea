"""Resizing of image batches: torch's interpolation modes, Lanczos-3, and MATLAB's `imresize`.

`{type: resize, scale: [0.15, 1.5], updown: [0.2, 0.7, 0.1], method: [area, bilinear, bicubic]}`
`{type: resize, to: target, method: [area, bilinear, bicubic]}`
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from esrforge.data.steps import Choice, Context, PipelineError, Range, Step, _where, choice_field, range_field

_MAX_PIXELS = 64 * 10**6  # per image, inside a pipeline: an 8K frame is 33 MP

METHODS = ("nearest", "bilinear", "bicubic", "area", "lanczos", "matlab")


# --- separable resampling with explicit weight matrices (MATLAB's imresize scheme) --------------


def _cubic(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic'), support [-2, 2]."""
    a = t.abs()
    a2, a3 = a * a, a * a * a
    inner = 1.5 * a3 - 2.5 * a2 + 1
    outer = -0.5 * a3 + 2.5 * a2 - 4 * a + 2
    return torch.where(a <= 1, inner, torch.where(a <= 2, outer, torch.zeros_like(a)))


def _lanczos3(t: Tensor) -> Tensor:
    """sinc(t) sinc(t / 3) on |t| < 3 (MATLAB's 'lanczos3', PIL's LANCZOS)."""
    pt = math.pi * t
    safe = torch.where(t == 0, torch.ones_like(t), pt)
    w = 3 * torch.sin(safe) * torch.sin(safe / 3) / (safe * safe)
    w = torch.where(t == 0, torch.ones_like(t), w)
    return torch.where(t.abs() < 3, w, torch.zeros_like(t))


_KERNELS: dict[str, tuple[Callable[[Tensor], Tensor], float]] = {"matlab": (_cubic, 4.0), "lanczos": (_lanczos3, 6.0)}


@lru_cache(maxsize=64)
def resize_weights(in_len: int, out_len: int, scale: float, method: str = "matlab") -> Tensor:
    """(out_len, in_len) float64 matrix M with out = M @ in along one axis, as MATLAB's
    imresize builds it (its `contributions`): output pixel i (1-based) maps to
    u = i / scale + (1 - 1 / scale) / 2; when shrinking (scale < 1) the kernel is stretched by
    1 / scale (antialiasing); each row is normalised to sum 1; taps beyond the border are mirrored
    with the edge pixel repeated (MATLAB's symmetric padding). Cached: treat the result as read-only."""
    kernel, width = _KERNELS[method]
    if scale < 1:
        def h(t: Tensor) -> Tensor:
            return scale * kernel(scale * t)
        width = width / scale
    else:
        h = kernel
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)  # 1-based input positions
    w = h(u[:, None] - idx)
    w = w / w.sum(dim=1, keepdim=True)
    # Symmetric padding: the index sequence 1..n, n..1 repeats with period 2n.
    m = torch.remainder(idx.long() - 1, 2 * in_len)
    src = torch.where(m < in_len, m, 2 * in_len - 1 - m)
    return torch.zeros(out_len, in_len, dtype=torch.float64).scatter_add_(1, src, w)


def _separable(x: Tensor, size: tuple[int, int], scales: tuple[float, float], method: str) -> Tensor:
    (h, w), (oh, ow) = x.shape[-2:], size
    # float32 at least: half precision weights would cost more than one gray level.
    dt = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    y = x.to(dt)
    if oh != h or scales[0] != 1:
        y = torch.matmul(resize_weights(h, oh, scales[0], method).to(device=x.device, dtype=dt), y)
    if ow != w or scales[1] != 1:
        y = torch.matmul(y, resize_weights(w, ow, scales[1], method).to(device=x.device, dtype=dt).T)
    return y.to(x.dtype)


def resize_to(x: Tensor, size: tuple[int, int], method: str) -> Tensor:
    """Resize x (N, C, H, W) to size (height, width). Values are not clamped (cubic kinds overshoot).

    - nearest: torch "nearest-exact" (pixel-centre aligned, no half-pixel shift).
    - bilinear, bicubic: F.interpolate with align_corners=False and no antialiasing, as in
      Real-ESRGAN's pipeline (bicubic there is a = -0.75).
    - area: F.interpolate "area" along shrinking axes; axes that grow use bilinear instead
      (area on enlargement degenerates to blocky nearest).
    - lanczos: separable Lanczos-3, kernel widened by 1/scale when shrinking (as PIL); borders are
      mirrored as MATLAB does (PIL instead truncates and renormalises, so edge pixels differ).
    - matlab: MATLAB's imresize(..., 'bicubic') with its default antialiasing, for size ratios
      out / in (what MATLAB does when given an output size).
    """
    if method not in METHODS:
        raise ValueError(f"unknown resize method {method!r}; allowed: {', '.join(METHODS)}")
    oh, ow = int(size[0]), int(size[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"output size must be positive, got {size}")
    h, w = x.shape[-2:]
    if (oh, ow) == (h, w):
        return x
    if method in ("matlab", "lanczos"):
        return _separable(x, (oh, ow), (oh / h, ow / w), method)
    if method == "nearest":
        return F.interpolate(x, size=(oh, ow), mode="nearest-exact")
    if method == "area":
        shrink = (min(oh, h), min(ow, w))
        if shrink != (h, w):
            x = F.interpolate(x, size=shrink, mode="area")
        if shrink == (oh, ow):
            return x
        method = "bilinear"
    return F.interpolate(x, size=(oh, ow), mode=method, align_corners=False, antialias=False)


def imresize(x: Tensor, scale: float) -> Tensor:
    """MATLAB's imresize(x, scale) (bicubic, antialiased): output size ceil(dim * scale), and the
    weights use `scale` itself rather than the rounded size ratio, as MATLAB does."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    h, w = x.shape[-2:]
    size = (math.ceil(h * scale), math.ceil(w * scale))
    if scale == 1:
        return x
    return _separable(x, size, (scale, scale), "matlab")


# --- the step ----------------------------------------------------------------------------------


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))


@dataclass(frozen=True)
class Resize(Step):
    """Resize the whole batch by a random factor, or exactly to the pipeline's LR target.

    - `scale`: factor relative to the current size (or to the target size with
      `relative_to: target`), uniform over the range unless `updown` is given.
    - `updown: [up, down, keep]` (or `{up: .., down: .., keep: ..}`): probabilities of growing
      (uniform in [1, high]), shrinking (uniform in [low, 1]) or keeping the size (Real-ESRGAN).
    - `to: target`: resize exactly to ctx.target; `scale`, `updown` and `relative_to` then stay unset.
    New size per axis = max(1, round(dim * scale)), rounding halves up.
    """

    name = "resize"
    batch_wide = True

    scale: Range = range_field(1.0, lo=0.05, hi=8.0, doc="size factor")
    updown: tuple[float, float, float] | None = field(default=None, metadata={
        "allowed_text": "3 weights >= 0, or {up, down, keep}; scale must contain 1",
        "doc": "probabilities of growing (factor drawn from [1, high]), shrinking ([low, 1]) or keeping the size"})
    to: str | None = field(default=None, metadata={
        "allowed_text": "target", "doc": "resize exactly to the LR target size; scale, updown, relative_to stay unset"})
    relative_to: str = field(default="current", metadata={
        "allowed_text": "current, target", "doc": "what `scale` multiplies: the current size or the LR target size"})
    method: Choice = choice_field("bicubic", allowed=METHODS, doc="interpolation method(s), drawn per batch")

    @classmethod
    def parse_extra(cls, key: str, value: Any, where: str) -> Any:
        if key == "updown":
            if value is None:
                return None
            if isinstance(value, Mapping):
                extra = [k for k in value if k not in ("up", "down", "keep")]
                if extra:
                    raise PipelineError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}; use up, down, keep")
                value = [value.get("up", 0), value.get("down", 0), value.get("keep", 0)]
            if not (
                isinstance(value, (list, tuple))
                and len(value) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value)
                and 0 < sum(value) < math.inf
            ):
                raise PipelineError(
                    f"{where}: expected [up, down, keep] probabilities >= 0 with a positive sum, got {value!r}"
                )
            return tuple(float(v) for v in value)
        if key == "to":
            if value != "target":
                raise PipelineError(f"{where}: the only allowed value is 'target', got {value!r}")
            return value
        if key == "relative_to":
            if value not in ("current", "target"):
                raise PipelineError(f"{where}: expected 'current' or 'target', got {value!r}")
            return value
        return super().parse_extra(key, value, where)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], index: int) -> Resize:
        step = super().from_spec(spec, index)
        if step.to is not None:  # type: ignore[attr-defined]
            for key in ("scale", "updown", "relative_to"):
                if key in spec:
                    raise PipelineError(f"{_where(index, cls.name, key)}: cannot be combined with 'to: target'")
        return step  # type: ignore[return-value]

    def check(self, index: int) -> None:
        if self.updown is not None and not self.scale.low <= 1 <= self.scale.high:
            raise PipelineError(
                f"{_where(index, self.name, 'scale')}: with updown the range must contain 1 "
                f"(down draws from [low, 1], up from [1, high]); got {self.scale}"
            )

    def _draw_scale(self, g: torch.Generator) -> float:
        if self.updown is None:
            return float(self.scale.sample(g).item())
        # Always two draws (branch, then value), whatever branch is taken.
        branch, t = torch.rand(2, generator=g, dtype=torch.float64).tolist()
        up, down, keep = self.updown
        total = up + down + keep
        if branch * total < up:
            return 1 + t * (self.scale.high - 1)
        if branch * total < up + down:
            return self.scale.low + t * (1 - self.scale.low)
        return 1.0

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        n = x.shape[0]
        method = self.method.sample(g)[0]
        if self.to == "target":
            size = (int(ctx.target[0]), int(ctx.target[1]))
            label = f"resize {method} -> {size[1]}x{size[0]}"  # width x height
        else:
            s = self._draw_scale(g)
            base = tuple(x.shape[-2:]) if self.relative_to == "current" else tuple(ctx.target)
            size = (max(1, _round_half_up(base[0] * s)), max(1, _round_half_up(base[1] * s)))
            label = f"resize {method} x{s:.2f}" + (" of target" if self.relative_to == "target" else "")
            if size[0] * size[1] > _MAX_PIXELS:  # steps that each enlarge within range can still multiply up
                raise PipelineError(f"resize step: x{s:.2f} of {base[1]}x{base[0]} is {size[1]}x{size[0]}, over "
                                    f"{_MAX_PIXELS // 10**6} megapixels per image; lower the enlarging steps' scale")
        # Cubic and Lanczos lobes overshoot at edges; the pipeline works in [0, 1].
        return resize_to(x, size, method).clamp(0, 1), [label] * n
