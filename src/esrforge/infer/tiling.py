"""Tiled inference that matches untiled output and never holds a float copy of the output.

Each tile is run with a margin of real image context on every side; only its core is kept. The
cores partition the output exactly, so nothing is blended from two tiles and the only difference
from an untiled run is context beyond the margin (RRDB's effective receptive field is a few dozen
pixels, so a 16-32 px margin keeps tiled output within a fraction of a gray level).
The output goes straight into a preallocated uint8/uint16 array, so peak memory is one tile's
working set plus the final image in its own bit depth.
"""

from __future__ import annotations

import collections
import contextlib
import copy as _copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from esrforge.modelio.detect import ModelDescriptor

DEFAULT_MARGIN = 16
# torch.OutOfMemoryError (any device) is torch 2.5's; before it, CUDA's was the only one.
_OOM: type[Exception] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class Progress(Protocol):
    total: float | None

    def update(self, n: float = 1) -> object: ...


@dataclass(frozen=True)
class Region:
    top: int
    left: int
    height: int
    width: int


def working_set_per_px(desc: ModelDescriptor, elem_size: int) -> float:
    """Rough peak activation bytes per input pixel, for choosing a tile size.

    Dominated by the last stages at full output resolution (a few num_feat-channel maps).
    """
    h, s = desc.hparams, desc.scale
    if desc.arch == "rrdbnet":
        u = h["unshuffle"]
        elems = 3 * h["num_feat"] * s * s + 2 * (h["num_feat"] + 4 * h["num_grow_ch"]) / (u * u)
    else:
        elems = 3 * h["num_feat"] + 3 * desc.out_ch * s * s
    return 1.5 * elem_size * (elems + 8 * desc.out_ch * s * s)


def is_oom(e: BaseException) -> bool:
    if isinstance(e, _OOM):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


@contextlib.contextmanager
def _ieee_fp32_convs() -> Iterator[None]:
    """fp32 means fp32: cuDNN runs fp32 convs as TF32 (10-bit mantissa) by default on Ampere and
    newer, which would cost 16-bit images the precision `auto` picks fp32 to keep."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = old


class TileRunner:
    """Runs one padded patch through the model on a device, in a precision, with fp32 rescue.

    Half precision uses autocast over fp32 weights: as fast as casting the weights here, and
    the residual additions stay in fp32. A tile whose half-precision output is not finite is
    run again in fp32 rather than written black.
    """

    def __init__(
        self, module: nn.Module, desc: ModelDescriptor, device: torch.device, dtype: torch.dtype, *, copy: bool = True
    ) -> None:
        self.desc, self.device, self.dtype = desc, device, dtype
        # A copy: channels_last, eval mode and the move to the device would otherwise change the
        # caller's module in place (its weights no longer contiguous, a training module in eval).
        # `copy=False` only for a module that is already another runner's copy.
        self.module = (_copy.deepcopy(module) if copy else module).to(device).eval()
        # channels_last lets oneDNN/cuDNN pick their fast convolution kernels on CPU and CUDA.
        if device.type in ("cpu", "cuda"):
            self.module = self.module.to(memory_format=torch.channels_last)
        self.fp32_rescues = 0

    def _forward(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if dtype != torch.float32:
            ctx = torch.autocast(self.device.type, dtype=dtype)
        elif self.device.type == "cuda":
            ctx = _ieee_fp32_convs()
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            return self.module(x).float()

    def __call__(self, patch: np.ndarray) -> torch.Tensor:
        """patch: H x W x C float32 in [0, 1] -> 1 x C x H*s x W*s float32 tensor on device."""
        k = self.desc.multiple_of
        x = torch.from_numpy(patch).to(self.device).permute(2, 0, 1).unsqueeze(0)
        h, w = x.shape[-2:]
        ph, pw = (-h) % k, (-w) % k
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        if self.device.type in ("cpu", "cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self._forward(x, self.dtype)
            if self.dtype != torch.float32 and not bool(torch.isfinite(y).all()):
                self.fp32_rescues += 1
                y = self._forward(x, torch.float32)
        s = self.desc.scale
        return y[..., : h * s, : w * s]


@torch.inference_mode()
def _to_numpy(y: torch.Tensor, dtype: np.dtype, maxval: float, channels: int) -> np.ndarray:
    """C x H x W float on the device -> H x W x `channels` in the output's dtype, converted on the
    device (an 8-bit tile crosses to the host at a quarter of its float size). A colour result
    for a gray slot is averaged (an RGB model run on a gray image); a gray result for a colour
    slot is repeated (a 3 -> 1 model)."""
    if y.shape[0] != channels:
        if channels == 1:
            y = y.mean(dim=0, keepdim=True)
        elif y.shape[0] == 1:
            y = y.expand(channels, -1, -1)
        else:
            raise ValueError(f"the model gives {y.shape[0]} channels where the image needs {channels}")
    y = y.clamp(0, 1).permute(1, 2, 0)
    if maxval != 1.0:
        y = (y * maxval).round_()
    if dtype == np.uint8:
        return y.to(torch.uint8).cpu().numpy()
    return y.to("cpu", torch.float32).numpy().astype(dtype)


def _split(r: Region, k: int) -> list[Region]:
    """Quarter a region along its long sides, keeping the cut on a multiple of k."""
    parts = []
    hh = max(k, (r.height // 2) // k * k) if r.height > k else r.height
    ww = max(k, (r.width // 2) // k * k) if r.width > k else r.width
    for top, height in ((r.top, hh), (r.top + hh, r.height - hh)):
        for left, width in ((r.left, ww), (r.left + ww, r.width - ww)):
            if height > 0 and width > 0:
                parts.append(Region(top, left, height, width))
    return parts


def upscale_tiled(
    run: Callable[[np.ndarray], torch.Tensor] | TileRunner,
    img: np.ndarray,
    out: np.ndarray,
    *,
    scale: int,
    tile: int,
    margin: int = DEFAULT_MARGIN,
    region: Region | None = None,
    multiple_of: int = 1,
    progress: Progress | None = None,
) -> int:
    """Upscale `region` of `img` (H x W x C float32, [0, 1]) into `out` (its size x scale).

    Pixels of `img` outside `region` serve only as context (seamless padding). `tile` 0 runs the
    region in one piece. Out-of-memory on a tile halves the tile size and retries. Returns the
    tile size that worked.
    """
    H, W = img.shape[:2]
    region = region or Region(0, 0, H, W)
    maxval = float(np.iinfo(out.dtype).max) if out.dtype.kind == "u" else 1.0
    k = max(1, multiple_of)
    limit = max(region.height, region.width) if tile <= 0 else max(k, tile // k * k)
    queue = collections.deque(
        Region(region.top + y, region.left + x, min(limit, region.height - y), min(limit, region.width - x))
        for y in range(0, region.height, limit)
        for x in range(0, region.width, limit)
    )
    if progress is not None:
        progress.total = len(queue)  # shown at the next update (no refresh: keeps tqdm's delay)
    while queue:
        r = queue.popleft()
        if max(r.height, r.width) > limit:
            parts = _split(r, k)
            queue.extendleft(reversed(parts))
            if progress is not None:
                progress.total = (progress.total or 0) + len(parts) - 1
            continue
        t0, l0 = max(0, r.top - margin), max(0, r.left - margin)
        t1, l1 = min(H, r.top + r.height + margin), min(W, r.left + r.width + margin)
        try:
            y = run(np.ascontiguousarray(img[t0:t1, l0:l1]))
        except (RuntimeError, _OOM) as e:
            if not is_oom(e):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            new_limit = (max(r.height, r.width) // 2) // k * k
            if new_limit < max(k, 8):
                raise MemoryError(f"out of memory even at a {max(r.height, r.width)}px tile") from None
            limit = new_limit
            queue.appendleft(r)
            continue
        oy, ox = (r.top - t0) * scale, (r.left - l0) * scale
        ty, tx = (r.top - region.top) * scale, (r.left - region.left) * scale
        out[ty : ty + r.height * scale, tx : tx + r.width * scale] = _to_numpy(
            y[0, :, oy : oy + r.height * scale, ox : ox + r.width * scale], out.dtype, maxval, out.shape[2]
        )
        if progress is not None:
            progress.update(1)
    return limit
