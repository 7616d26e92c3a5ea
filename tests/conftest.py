"""Shared fixtures: tiny models (a few thousand parameters) and images made by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from esrforge.archs import RRDBNet, SRVGGNetCompact


def tiny_rrdb(scale: int = 4, *, num_grow_ch: int = 6, seed: int = 0, **kw) -> RRDBNet:
    torch.manual_seed(seed)
    hp = dict(num_feat=8, num_block=2, num_grow_ch=num_grow_ch, scale=scale) | kw
    m = RRDBNet(**hp).eval()
    return m


def tiny_compact(scale: int = 4, *, activation: str = "prelu", seed: int = 0, **kw) -> SRVGGNetCompact:
    torch.manual_seed(seed)
    hp = dict(num_feat=8, num_conv=3, scale=scale, activation=activation) | kw
    m = SRVGGNetCompact(**hp).eval()
    return m


def photo_like(h: int = 48, w: int = 64, c: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """Smooth shapes plus mild texture: closer to a photo than white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = []
    for i in range(c):
        f = 0.5 + 0.3 * np.sin(x / (5.0 + 2 * i) + i) * np.cos(y / (7.0 + i)) + 0.1 * rng.standard_normal((h, w))
        f[(x - w / 3) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 4) ** 2] += 0.25
        chans.append(f)
    img = np.clip(np.stack(chans, axis=2), 0, 1)
    maxval = np.iinfo(dtype).max
    return np.round(img * maxval).astype(dtype)


@pytest.fixture
def rrdb_file(tmp_path: Path) -> Path:
    p = tmp_path / "rrdb_x4.pth"
    torch.save({"params_ema": tiny_rrdb().state_dict()}, p)
    return p
