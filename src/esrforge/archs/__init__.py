"""Generator architectures. The registry is a literal mapping: grep for a name to find it."""

from __future__ import annotations

from torch import nn

from esrforge.archs.compact import SRVGGNetCompact
from esrforge.archs.rrdbnet import RRDBNet

ARCHS: dict[str, type[nn.Module]] = {
    "rrdbnet": RRDBNet,
    "compact": SRVGGNetCompact,
}


def build(arch: str, **hparams: object) -> nn.Module:
    """Construct a registered architecture from keyword hyperparameters."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}")
    return ARCHS[arch](**hparams)


__all__ = ["ARCHS", "RRDBNet", "SRVGGNetCompact", "build"]
