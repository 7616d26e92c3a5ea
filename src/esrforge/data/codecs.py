"""Lossy codec round trips (JPEG, WebP) through OpenCV: the codecs' own artifacts.

    {type: jpeg, quality: [30, 95]}
    {type: webp, quality: [50, 95]}

Each sample is rounded to 8 bits, encoded and decoded on the CPU, and returned on the input's
device and dtype, so outputs are multiples of 1/255. Tensors are RGB (OpenCV wants BGR);
1 channel is gray, 2 and 4 channels carry alpha last, which passes through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import torch
from torch import Tensor

from esrforge.data.steps import Context, Range, Step, range_field


def _colour_channels(c: int) -> int:
    if c not in (1, 2, 3, 4):
        raise ValueError(f"codecs take 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, got {c}")
    return 1 if c <= 2 else 3


def _qualities(quality: Tensor | Sequence[int] | int, n: int) -> list[int]:
    if isinstance(quality, (int, float)):
        return [int(quality)] * n
    q = [int(v) for v in (quality.tolist() if isinstance(quality, Tensor) else quality)]
    if len(q) != n:
        raise ValueError(f"expected {n} qualities, got {len(q)}")
    return q


def codec_roundtrip(x: Tensor, quality: Tensor | Sequence[int] | int, ext: str, flag: int) -> Tensor:
    """Encode and decode every sample of x (N, C, H, W in [0, 1]) with OpenCV's `ext` codec at
    its own quality (`flag` is the cv2.IMWRITE_* quality parameter)."""
    n, c, h, w = x.shape
    cc = _colour_channels(c)
    qs = _qualities(quality, n)
    u8 = (x[:, :cc].detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.uint8)
    u8 = u8.permute(0, 2, 3, 1).numpy()  # N, H, W, cc
    out = np.empty_like(u8)
    read = cv2.IMREAD_GRAYSCALE if cc == 1 else cv2.IMREAD_COLOR  # WebP decodes gray as BGR
    for i, q in enumerate(qs):
        img = np.ascontiguousarray(u8[i, :, :, 0] if cc == 1 else u8[i, :, :, ::-1])  # RGB -> BGR
        ok, buf = cv2.imencode(ext, img, [flag, q])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {ext} at quality {q}")
        dec = cv2.imdecode(buf, read)
        out[i] = dec[:, :, None] if cc == 1 else dec[:, :, ::-1]  # BGR -> RGB
    y = torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=torch.float32).div_(255).to(x.dtype)
    if c > cc:
        y = torch.cat([y, x[:, cc:]], dim=1)  # alpha untouched
    return y


def jpeg_compress(x: Tensor, quality: Tensor | Sequence[int] | int) -> Tensor:
    """JPEG round trip per sample (quality 1-100, OpenCV's default 4:2:0 chroma subsampling)."""
    return codec_roundtrip(x, quality, ".jpg", cv2.IMWRITE_JPEG_QUALITY)


def webp_compress(x: Tensor, quality: Tensor | Sequence[int] | int) -> Tensor:
    """Lossy WebP round trip per sample (quality 1-100; above 100 OpenCV goes lossless)."""
    return codec_roundtrip(x, quality, ".webp", cv2.IMWRITE_WEBP_QUALITY)


class _CodecStep(Step):
    """A real encode/decode round trip at a per-sample quality; subclasses set the codec and
    declare `quality` with their own defaults."""

    ext: ClassVar[str]
    flag: ClassVar[int]
    quality: Range

    def run(self, x: Tensor, g: torch.Generator, ctx: Context) -> tuple[Tensor, list[str]]:
        q = self.quality.sample(g, x.shape[0]).long()
        return codec_roundtrip(x, q, self.ext, self.flag), [f"{self.name} q={v}" for v in q.tolist()]


@dataclass(frozen=True)
class Jpeg(_CodecStep):
    """`{type: jpeg, quality: [30, 95]}`"""

    name = "jpeg"
    ext, flag = ".jpg", cv2.IMWRITE_JPEG_QUALITY
    quality: Range = range_field((30, 95), lo=1, hi=100, integer=True, doc="JPEG quality per sample")


@dataclass(frozen=True)
class Webp(_CodecStep):
    """`{type: webp, quality: [50, 95]}`"""

    name = "webp"
    ext, flag = ".webp", cv2.IMWRITE_WEBP_QUALITY
    quality: Range = range_field((50, 95), lo=1, hi=100, integer=True, doc="WebP quality per sample")
