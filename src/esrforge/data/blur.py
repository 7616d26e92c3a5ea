"""Random blur kernels, as in Real-ESRGAN's degradation model, applied per sample.

Kernel kinds: isotropic / anisotropic Gaussian, their generalized (sharper or flatter shoulders)
and plateau (heavy-tailed) variants, a circular low-pass sinc (ringing), and a box.

`{type: blur, p: 0.8, kernel: [gaussian, generalized, plateau], sigma: [0.2, 3.0]}`
`{type: blur, kernel: {iso: 0.45, aniso: 0.25, generalized_iso: 0.12, generalized_aniso: 0.03,
  plateau_iso: 0.12, plateau_aniso: 0.03}}`
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from esrforge.data.filters import filter2d
from esrforge.data.steps import Choice, Context, PipelineError, Range, Step, _where, choice_field, range_field

KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc", "box")
ALIASES = {"gaussian": "iso", "generalized": "generalized_iso", "plateau": "plateau_iso"}

# Real-ESRGAN's sinc rule: small kernels cannot hold a very low cutoff's wide main lobe.
AUTO_CUTOFF_SMALL = (math.pi / 3, math.pi)  # size < 13
AUTO_CUTOFF_LARGE = (math.pi / 5, math.pi)  # size >= 13


def canonical_kind(kind: str) -> str:
    """Map an alias (gaussian, generalized, plateau) to its kernel kind; reject unknown kinds."""
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown kernel kind {kind!r}; allowed: {', '.join(KINDS + tuple(ALIASES))}")
    return kind


def make_kernel(
    kind: str,
    size: int,
    *,
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float = 1.0,
    cutoff: float | None = None,
) -> Tensor:
    """A normalised (size, size) float64 blur kernel.

    Gaussian kinds use the quadratic form q = d^T Sigma^-1 d with Sigma = R(theta) diag(sx^2, sy^2)
    R(theta)^T (d = (column, row) offset from the centre); then Gaussian exp(-q/2), generalized
    exp(-q^beta / 2), plateau 1 / (1 + q^beta). Iso kinds ignore sigma_y and theta. "sinc" is the
    circular low-pass omega J1(omega r) / (2 pi r) with omega = cutoff (radians); "box" is uniform.
    """
    kind = canonical_kind(kind)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")

    if kind == "box":
        k = torch.ones(size, size, dtype=torch.float64)
    elif kind == "sinc":
        if cutoff is None or cutoff <= 0:
            raise ValueError(f"sinc kernel needs a positive cutoff, got {cutoff!r}")
        rad = torch.hypot(xx, yy)
        safe = torch.where(rad == 0, torch.ones_like(rad), rad)  # avoid 0/0; the centre is set below
        k = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
        k = torch.where(rad == 0, torch.full_like(k, cutoff**2 / (4 * math.pi)), k)
    else:
        if sigma_x is None or sigma_x <= 0:
            raise ValueError(f"{kind} kernel needs sigma_x > 0, got {sigma_x!r}")
        iso = kind.endswith("iso") and not kind.endswith("aniso")
        sx = sigma_x
        sy = sx if iso or sigma_y is None else sigma_y
        if sy <= 0:
            raise ValueError(f"{kind} kernel needs sigma_y > 0, got {sigma_y!r}")
        t = 0.0 if iso else theta
        c, s = math.cos(t), math.sin(t)
        # Offsets in the kernel's principal axes (R^T d), so q = (u/sx)^2 + (v/sy)^2.
        u = c * xx + s * yy
        v = -s * xx + c * yy
        q = (u / sx) ** 2 + (v / sy) ** 2
        if kind in ("iso", "aniso"):
            k = torch.exp(-0.5 * q)
        elif kind.startswith("generalized"):
            k = torch.exp(-0.5 * q.pow(beta))
        else:  # plateau
            k = 1.0 / (1.0 + q.pow(beta))
    return k / k.sum()


def _odd_bounds(r: Range) -> tuple[int, int]:
    """The smallest and largest odd whole numbers within r (low > high when there are none)."""
    a, b = math.ceil(r.low), math.floor(r.high)
    return (a if a % 2 else a + 1), (b if b % 2 else b - 1)


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Blur(Step):
    """Blur each sample with its own random kernel (kind, size and shape drawn per sample).

    `cutoff` (sinc only, radians) defaults to Range(0, 0), which means *auto*: drawn from
    [pi/3, pi] for kernels smaller than 13 px and [pi/5, pi] otherwise (Real-ESRGAN's rule).
    YAML may write `cutoff: auto` (or 0) for the same thing, or a number / [low, high] in (0, pi].
    """

    name = "blur"
    kernel: Choice = choice_field("iso", allowed=KINDS + tuple(ALIASES), doc="kernel kind(s), optionally weighted")
    size: Range = range_field((7, 21), lo=3, hi=63, integer=True, odd=True, doc="kernel size; odd sizes are drawn")
    sigma: Range = range_field((0.2, 3.0), lo=0.1, hi=10.0, doc="Gaussian sigma (each axis for aniso kinds)")
    beta_generalized: Range = range_field((0.5, 4.0), lo=0.1, hi=8.0, doc="shape exponent of generalized kernels")
    beta_plateau: Range = range_field((1.0, 2.0), lo=0.1, hi=8.0, doc="shape exponent of plateau kernels")
    cutoff: Range = range_field(0.0, lo=0.0, hi=math.pi, doc="sinc cutoff in radians; 0 / auto = by kernel size")

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], index: int) -> Blur:
        if isinstance(spec, Mapping) and spec.get("cutoff") == "auto":
            spec = {**spec, "cutoff": 0}
        return super().from_spec(spec, index)  # type: ignore[return-value]

    def check(self, index: int) -> None:
        a, b = _odd_bounds(self.size)
        if a > b:
            raise PipelineError(f"{_where(index, self.name, 'size')}: {self.size} holds no odd size")
        auto = self.cutoff.low == 0 and self.cutoff.high == 0
        if not auto and self.cutoff.low <= 0:
            raise PipelineError(
                f"{_where(index, self.name, 'cutoff')}: use 0 or auto alone for automatic; "
                "a cutoff range must lie in (0, pi]"
            )

    def _sizes(self, g: torch.Generator, n: int) -> list[int]:
        a, b = _odd_bounds(self.size)
        if a > b:
            raise ValueError(f"blur: size {self.size} holds no odd size")
        count = (b - a) // 2 + 1
        u = torch.rand(n, generator=g, dtype=torch.float64)
        return [a + 2 * min(int(v * count), count - 1) for v in u.tolist()]

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        n = x.shape[0]
        # Fixed draw order and count (kinds, sizes, then 4 uniforms per sample whatever the kind),
        # so one seed gives the same kernels on every device and for every kind mix.
        kinds = [canonical_kind(k) for k in self.kernel.sample(g, n)]
        sizes = self._sizes(g, n)
        u = torch.rand(n, 4, generator=g, dtype=torch.float64).tolist()

        def lerp(r: Range | tuple[float, float], t: float) -> float:
            lo, hi = (r.low, r.high) if isinstance(r, Range) else r
            return lo + t * (hi - lo)

        kernels, labels = [], []
        for kind, size, (u0, u1, u2, u3) in zip(kinds, sizes, u):
            sx, sy, theta = lerp(self.sigma, u0), lerp(self.sigma, u1), -math.pi + 2 * math.pi * u2
            aniso = kind.endswith("aniso")
            shape = f"s={_fmt(sx)}/{_fmt(sy)} r={round(math.degrees(theta))}deg" if aniso else f"s={_fmt(sx)}"
            if kind == "box":
                k, desc = make_kernel(kind, size), ""
            elif kind == "sinc":
                auto = self.cutoff.low == 0 and self.cutoff.high == 0
                rng = (AUTO_CUTOFF_SMALL if size < 13 else AUTO_CUTOFF_LARGE) if auto else self.cutoff
                omega = lerp(rng, u3)
                k, desc = make_kernel(kind, size, cutoff=omega), f"w={_fmt(omega)} "
            else:
                beta = 1.0
                if kind.startswith("generalized"):
                    beta = lerp(self.beta_generalized, u3)
                elif kind.startswith("plateau"):
                    beta = lerp(self.beta_plateau, u3)
                k = make_kernel(kind, size, sigma_x=sx, sigma_y=sy, theta=theta, beta=beta)
                desc = f"{shape} b={_fmt(beta)} " if kind not in ("iso", "aniso") else f"{shape} "
            kernels.append(k)
            labels.append(f"blur {kind} {desc}k={size}")

        # One grouped conv for the batch: smaller kernels are zero-padded (centred) to the largest.
        kmax = max(sizes)
        stack = torch.stack([F.pad(k, [(kmax - k.shape[0]) // 2] * 4) for k in kernels])
        # Sinc kernels have negative lobes and can overshoot; keep the batch in [0, 1].
        y = filter2d(x, stack).clamp_(0, 1)
        return y, labels
