"""The common shape of a degradation step, and typed parameters parsed from YAML.

A step is a frozen dataclass. Its fields are its parameters: ranges (`[low, high]` sampled
uniformly, or one number), choices (one name, a list of names drawn uniformly, or a mapping
name -> weight), and plain numbers. `Step.__call__` decides per sample whether the step fires
(probability `p`) and calls `run` on the samples that fire.

Randomness: every draw comes from the CPU `torch.Generator` handed in, in a fixed order that does
not depend on the tensor's device, so a seed gives the same result on CPU and GPU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor


class PipelineError(ValueError):
    """A bad pipeline spec; the message names the step index and the field."""


# --- parameter kinds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A number drawn uniformly from [low, high] (low == high for a fixed value)."""

    low: float
    high: float
    integer: bool = False  # draw whole numbers (inclusive bounds)

    def sample(self, g: torch.Generator, n: int = 1) -> Tensor:
        u = torch.rand(n, generator=g, dtype=torch.float64)
        if self.integer:
            lo, hi = math.ceil(self.low), math.floor(self.high)
            return torch.floor(lo + u * (hi - lo + 1)).clamp_(max=hi)
        return self.low + u * (self.high - self.low)

    def __str__(self) -> str:
        return f"{self.low:g}" if self.low == self.high else f"[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice:
    """One of several names, drawn with the given weights."""

    options: tuple[str, ...]
    weights: tuple[float, ...]

    def sample(self, g: torch.Generator, n: int = 1) -> list[str]:
        if len(self.options) == 1:
            torch.rand(n, generator=g)  # keep the draw count independent of the option count
            return [self.options[0]] * n
        w = torch.tensor(self.weights, dtype=torch.float64)
        idx = torch.multinomial(w / w.sum(), n, replacement=True, generator=g)
        return [self.options[i] for i in idx.tolist()]

    def __str__(self) -> str:
        return self.options[0] if len(self.options) == 1 else "|".join(self.options)


def range_field(default: float | tuple[float, float], *, lo: float, hi: float, integer: bool = False, odd: bool = False, doc: str = "") -> Any:
    """A dataclass field holding a Range, with the bounds YAML values must respect."""
    low, high = (default, default) if isinstance(default, (int, float)) else default
    return field(
        default=Range(float(low), float(high), integer),
        metadata={"kind": "range", "lo": lo, "hi": hi, "integer": integer, "odd": odd, "doc": doc},
    )


def choice_field(default: str | Sequence[str], *, allowed: Sequence[str], doc: str = "") -> Any:
    opts = (default,) if isinstance(default, str) else tuple(default)
    return field(
        default=Choice(opts, tuple(1.0 for _ in opts)),
        metadata={"kind": "choice", "allowed": tuple(allowed), "doc": doc},
    )


def number_field(default: float, *, lo: float, hi: float, integer: bool = False, doc: str = "") -> Any:
    return field(default=default, metadata={"kind": "number", "lo": lo, "hi": hi, "integer": integer, "doc": doc})


def _where(index: int, name: str, key: str) -> str:
    return f"pipeline step {index} ({name}): field '{key}'"


def parse_range(value: Any, meta: Mapping[str, Any], where: str) -> Range:
    lo, hi, integer = meta["lo"], meta["hi"], meta["integer"]
    if isinstance(value, bool):
        raise PipelineError(f"{where}: expected a number or [low, high], got {value!r}")
    if isinstance(value, (int, float)):
        low = high = float(value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        low, high = float(value[0]), float(value[1])
    else:
        raise PipelineError(f"{where}: expected a number or [low, high], got {value!r}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise PipelineError(f"{where}: expected finite numbers, got {value!r}")
    if low > high:
        raise PipelineError(f"{where}: low {low:g} is above high {high:g}")
    if low < lo or high > hi:
        raise PipelineError(f"{where}: {value!r} is outside the allowed range [{lo:g}, {hi:g}]")
    if integer and (low != int(low) or high != int(high)):
        raise PipelineError(f"{where}: expected whole numbers, got {value!r}")
    if meta.get("odd") and low == high and int(low) % 2 == 0:
        raise PipelineError(f"{where}: must be odd, got {value!r}")
    return Range(low, high, integer)


def parse_choice(value: Any, meta: Mapping[str, Any], where: str) -> Choice:
    allowed = meta["allowed"]
    if isinstance(value, str):
        opts, weights = (value,), (1.0,)
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        opts, weights = tuple(value), tuple(1.0 for _ in value)
    elif isinstance(value, Mapping) and value:
        opts = tuple(str(k) for k in value)
        weights = tuple(value.values())
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights) or not 0 < sum(weights) < math.inf:
            raise PipelineError(f"{where}: weights must be numbers >= 0 with a positive sum, got {dict(value)!r}")
        weights = tuple(float(w) for w in weights)
    else:
        raise PipelineError(f"{where}: expected one of {', '.join(allowed)}, a list of them, or name: weight; got {value!r}")
    bad = [o for o in opts if o not in allowed]
    if bad:
        raise PipelineError(f"{where}: unknown {', '.join(map(repr, bad))}; allowed: {', '.join(allowed)}")
    return Choice(opts, weights)


def parse_number(value: Any, meta: Mapping[str, Any], where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PipelineError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise PipelineError(f"{where}: expected a finite number, got {value!r}")
    if not meta["lo"] <= value <= meta["hi"]:
        raise PipelineError(f"{where}: {value!r} is outside the allowed range [{meta['lo']:g}, {meta['hi']:g}]")
    if meta["integer"]:
        if value != int(value):
            raise PipelineError(f"{where}: expected a whole number, got {value!r}")
        return int(value)
    return float(value)


# --- steps -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a step may need beyond its input: the LR size the pipeline must end at."""

    target: tuple[int, int]  # (height, width) = HR size // scale
    scale: int


@dataclass(frozen=True)
class Step:
    """Base of every step. Subclasses set `name`, add fields, and implement `run`."""

    name: ClassVar[str] = "step"
    # Steps that change the image size fire for the whole batch or not at all (a batch tensor
    # holds one size); all others decide per sample.
    batch_wide: ClassVar[bool] = False

    p: float = number_field(1.0, lo=0.0, hi=1.0, doc="probability that the step fires")

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        """Apply to every sample of x (N, C, H, W in [0, 1]); return output and one label each."""
        raise NotImplementedError

    def __call__(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        n = x.shape[0]
        if self.batch_wide:
            fire = bool(torch.rand(1, generator=g).item() < self.p)
            if not fire:
                return x, [""] * n
            return self.run(x, g, ctx)
        mask = torch.rand(n, generator=g) < self.p
        if bool(mask.all()):
            return self.run(x, g, ctx)
        labels = [""] * n
        if not bool(mask.any()):
            return x, labels
        idx = mask.nonzero().flatten()
        y, sub = self.run(x[idx.to(x.device)], g, ctx)
        out = x.clone()
        out[idx.to(x.device)] = y.to(out.dtype)
        for i, lab in zip(idx.tolist(), sub):
            labels[i] = lab
        return out, labels

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], index: int) -> Step:
        """Build from a YAML mapping (without `type`), validating every field."""
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = [k for k in spec if k not in fields]
        if unknown:
            raise PipelineError(
                f"pipeline step {index} ({cls.name}): unknown field(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(fields)}"
            )
        kwargs = {}
        for key, value in spec.items():
            f = fields[key]
            where = _where(index, cls.name, key)
            kind = f.metadata.get("kind")
            if kind == "range":
                kwargs[key] = parse_range(value, f.metadata, where)
            elif kind == "choice":
                kwargs[key] = parse_choice(value, f.metadata, where)
            elif kind == "number":
                kwargs[key] = parse_number(value, f.metadata, where)
            else:
                kwargs[key] = cls.parse_extra(key, value, where)
        step = cls(**kwargs)
        step.check(index)
        return step

    @classmethod
    def parse_extra(cls, key: str, value: Any, where: str) -> Any:
        """Fields of other kinds (a step list, a flag) parse here; override where needed."""
        raise PipelineError(f"{where}: cannot be set")

    def check(self, index: int) -> None:
        """Cross-field validation after parsing; raise PipelineError naming the step."""


def per_sample_tensor(values: Tensor, x: Tensor) -> Tensor:
    """A (N,) tensor of per-sample values shaped (N, 1, 1, 1) on x's device and dtype."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
