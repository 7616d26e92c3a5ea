"""Degradation pipelines: an ordered list of steps from YAML, a preset name or inline config.

    steps:
      - {type: blur, p: 0.8, kernel: [gaussian, generalized, plateau], sigma: [0.2, 3.0]}
      - {type: resize, scale: [0.15, 1.5], method: [area, bilinear, bicubic]}
      - {type: jpeg, quality: [30, 95]}

A pipeline always ends at exactly HR size // scale: if the last step leaves another size, a
MATLAB-bicubic resize to the target is added.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from esrforge.data.blur import Blur
from esrforge.data.codecs import Jpeg, Webp
from esrforge.data.dither import Dither, Quantize
from esrforge.data.noise import Noise
from esrforge.data.resize import Resize, resize_to
from esrforge.data.sharpen import Sharpen
from esrforge.data.steps import Context, PipelineError, Step
from esrforge.yamlfile import YamlError, load_yaml


@dataclass(frozen=True)
class RandomOrder(Step):
    """`{type: random_order, steps: [stepA, [stepB1, stepB2]]}`: runs the items in a random
    order; an item that is a list is a group that stays in its own order (Real-ESRGAN runs
    "resize + sinc" and "JPEG" in random order at the end)."""

    name = "random_order"
    batch_wide = True
    steps: tuple[tuple[Step, ...], ...] = field(default=(), metadata={
        "allowed_text": "steps, or lists of steps", "doc": "the items, run in a random order; a list keeps its own order"})

    @classmethod
    def parse_extra(cls, key: str, value: Any, where: str) -> Any:
        if key != "steps":
            return super().parse_extra(key, value, where)
        if not isinstance(value, list) or not value:
            raise PipelineError(f"{where}: expected a list of steps (or lists of steps)")
        groups = []
        for i, item in enumerate(value):
            items = item if isinstance(item, list) else [item]
            groups.append(tuple(parse_step(s, f"{where.split(':')[0]}.steps[{i}]") for s in items))
        return tuple(groups)

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        labels = [[] for _ in range(x.shape[0])]
        for gi in torch.randperm(len(self.steps), generator=g).tolist():
            for step in self.steps[gi]:
                x, lab = step(x, g, ctx)
                for acc, l in zip(labels, lab):
                    if l:
                        acc.append(l)
        return x, [", ".join(l) for l in labels]


# The registry is a literal mapping: grep a step name to find its class.
STEPS: dict[str, type[Step]] = {
    "blur": Blur,
    "resize": Resize,
    "noise": Noise,
    "jpeg": Jpeg,
    "webp": Webp,
    "dither": Dither,
    "quantize": Quantize,
    "sharpen": Sharpen,
    "random_order": RandomOrder,
}


def parse_step(spec: Any, where: str | int) -> Step:
    """One `{type: NAME, ...}` mapping -> a validated Step. `where` names it in errors."""
    label = f"pipeline step {where}" if isinstance(where, int) else where
    if not isinstance(spec, Mapping):
        raise PipelineError(f"{label}: expected a mapping like {{type: blur, ...}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in STEPS:
        raise PipelineError(f"{label}: unknown type {kind!r}; allowed: {', '.join(STEPS)}")
    params = {k: v for k, v in spec.items() if k != "type"}
    try:
        return STEPS[kind].from_spec(params, where if isinstance(where, int) else 0)
    except PipelineError as e:
        if isinstance(where, int):
            raise
        # Nested steps: replace the generic "pipeline step 0" with the nested path.
        raise PipelineError(str(e).replace("pipeline step 0", where, 1)) from None


_RESAMPLE = ["area", "bilinear", "bicubic"]
_KERNELS = {"iso": 0.45, "aniso": 0.25, "generalized_iso": 0.12, "generalized_aniso": 0.03, "plateau_iso": 0.12, "plateau_aniso": 0.03}


def _with_sinc(p_sinc: float) -> dict[str, float]:
    """Real-ESRGAN draws a sinc kernel with probability p_sinc, else from the kernel mix."""
    return {k: round(w * (1 - p_sinc), 6) for k, w in _KERNELS.items()} | {"sinc": p_sinc}


# Built-in presets, as the YAML a user would write.
PRESETS: dict[str, list[dict[str, Any]]] = {
    # Classic ESRGAN / DIV2K LR sets: MATLAB's antialiased bicubic and nothing else.
    "bicubic": [{"type": "resize", "to": "target", "method": "matlab"}],
    # Real-ESRGAN's second-order degradation with its published defaults.
    "realesrgan": [
        # Real-ESRGAN degrades the USM-sharpened HR (gt_usm), not the HR itself.
        {"type": "sharpen", "amount": 0.5, "radius": 50, "threshold": 10},
        {"type": "blur", "kernel": _with_sinc(0.1), "size": [7, 21], "sigma": [0.2, 3.0], "beta_generalized": [0.5, 4.0], "beta_plateau": [1.0, 2.0]},
        {"type": "resize", "scale": [0.15, 1.5], "updown": [0.2, 0.7, 0.1], "method": _RESAMPLE},
        {"type": "noise", "kind": {"gaussian": 0.5, "poisson": 0.5}, "sigma": [1, 30], "poisson_scale": [0.05, 3.0], "gray_p": 0.4},
        {"type": "jpeg", "quality": [30, 95]},
        {"type": "blur", "p": 0.8, "kernel": _with_sinc(0.1), "size": [7, 21], "sigma": [0.2, 1.5], "beta_generalized": [0.5, 4.0], "beta_plateau": [1.0, 2.0]},
        {"type": "resize", "scale": [0.3, 1.2], "updown": [0.3, 0.4, 0.3], "relative_to": "target", "method": _RESAMPLE},
        {"type": "noise", "kind": {"gaussian": 0.5, "poisson": 0.5}, "sigma": [1, 25], "poisson_scale": [0.05, 2.5], "gray_p": 0.4},
        {
            "type": "random_order",
            "steps": [
                # The final sinc's cutoff is drawn from [pi/3, pi] at every size (the first two
                # blurs' size-dependent rule does not apply to it).
                [{"type": "resize", "to": "target", "method": _RESAMPLE},
                 {"type": "blur", "p": 0.8, "kernel": "sinc", "size": [7, 21], "cutoff": [math.pi / 3, math.pi]}],
                {"type": "jpeg", "quality": [30, 95]},
            ],
        },
    ],
}


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]
    source: str = "inline"

    def __call__(self, hr: Tensor, g: torch.Generator, scale: int) -> tuple[Tensor, list[list[str]]]:
        """Degrade an HR batch (N, C, H, W in [0, 1]) to exactly (H // scale, W // scale).

        Returns the LR batch and, per sample, the labels of the steps that fired.
        """
        if hr.ndim != 4:
            raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(hr.shape)}")
        if not hr.is_floating_point():
            raise ValueError(f"expected a float batch in [0, 1], got {hr.dtype} (divide 8-bit images by 255)")
        target = (hr.shape[-2] // scale, hr.shape[-1] // scale)
        if min(target) < 1:
            raise ValueError(f"HR size {tuple(hr.shape[-2:])} is smaller than the scale {scale}")
        ctx = Context(target=target, scale=scale)
        labels: list[list[str]] = [[] for _ in range(hr.shape[0])]
        x = hr
        for step in self.steps:
            x, lab = step(x, g, ctx)
            for acc, l in zip(labels, lab):
                if l:
                    acc.append(l)
        if tuple(x.shape[-2:]) != target:
            x = resize_to(x, target, "matlab")
            for acc in labels:
                acc.append(f"resize matlab -> {target[1]}x{target[0]} (final)")
        return x.clamp(0, 1), labels

    def keeping_alpha(self, hr: Tensor, g: torch.Generator, scale: int) -> tuple[Tensor, list[list[str]]]:
        """As calling the pipeline, for a batch whose last channel is alpha when it has 2 or 4:
        the colour is degraded and the alpha only resized (MATLAB bicubic), as blur, noise or
        JPEG on a mask mean nothing. `esrforge degrade` and on-the-fly training both use this."""
        if hr.shape[1] not in (2, 4):
            return self(hr, g, scale)
        lr, labels = self(hr[:, :-1], g, scale)
        alpha = resize_to(hr[:, -1:], tuple(lr.shape[-2:]), "matlab").clamp(0, 1)
        return torch.cat([lr, alpha], dim=1), labels


def _load_yaml(path: Path) -> Any:
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except YamlError as e:
        raise PipelineError(f"{path}: {e}") from None


def load_pipeline(spec: str | Path | Sequence[Any] | Mapping[str, Any]) -> Pipeline:
    """A preset name, a path to a pipeline YAML file, a list of steps, or {steps: [...]}."""
    source = "inline"
    if isinstance(spec, (str, Path)):
        if isinstance(spec, str) and spec in PRESETS:
            return _build(PRESETS[spec], f"preset {spec}")
        path = Path(spec)
        if not path.is_file():
            raise PipelineError(
                f"pipeline {str(spec)!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file"
            )
        source, spec = str(path), _load_yaml(path)
    if isinstance(spec, Mapping):
        extra = [k for k in spec if k != "steps"]
        if extra or "steps" not in spec:
            raise PipelineError(f"{source}: a pipeline mapping has one key, 'steps'; found {', '.join(map(str, spec)) or 'none'}")
        spec = spec["steps"]
    if not isinstance(spec, Sequence) or isinstance(spec, str):
        raise PipelineError(f"{source}: expected a list of steps, got {type(spec).__name__}")
    return _build(spec, source)


def _build(steps: Sequence[Any], source: str) -> Pipeline:
    parsed, problems = [], []
    for i, s in enumerate(steps, 1):  # step 1 is the first
        try:
            parsed.append(parse_step(s, i))
        except PipelineError as e:  # every step's mistake at once, as training configs do
            problems.append(str(e))
    if problems:
        raise PipelineError(problems[0] if len(problems) == 1 else f"{len(problems)} problems: {'; '.join(problems)}")
    return Pipeline(tuple(parsed), source)
