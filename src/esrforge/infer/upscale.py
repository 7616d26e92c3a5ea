"""Upscaling numpy images: channels (gray, gray + alpha, RGB, RGBA), bit depth, seamless edges, chains, outscale."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Union

import cv2
import numpy as np
import torch

from esrforge.images import clip_to_unit
from esrforge.infer.device import auto_tile, resolve_device, resolve_precision, slow_precision_note
from esrforge.infer.tiling import DEFAULT_MARGIN, Progress, Region, TileRunner, upscale_tiled, working_set_per_px
from esrforge.modelio.detect import LoadedModel, describe

SEAMLESS_MODES = {"tile": "wrap", "mirror": "reflect", "replicate": "edge"}


_CV2_BORDERS = {"tile": cv2.BORDER_WRAP, "mirror": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE}


def _border_index(i: np.ndarray, n: int, border: int) -> np.ndarray:
    """Where index i (possibly outside 0..n-1) reads from, under an OpenCV border mode."""
    if border == cv2.BORDER_WRAP:
        return np.mod(i, n)
    if border == cv2.BORDER_REPLICATE or n == 1:
        return np.clip(i, 0, n - 1)
    period = 2 * n - 2  # BORDER_REFLECT_101: ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...
    j = np.mod(i, period)
    return np.where(j < n, j, period - j)


def _lanczos_block(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, border: int) -> np.ndarray:
    """Lanczos-4 samples of `img` at rows ys x columns xs (source coordinates), read past the edges
    with `border`. Only the source window the 8-tap kernel needs is gathered, so cv2.remap's size
    limit (32767 px a side) applies to the block, not to the image."""
    h, w = img.shape[:2]
    ay, ax = int(np.floor(ys[0])) - 4, int(np.floor(xs[0])) - 4
    by, bx = int(np.floor(ys[-1])) + 6, int(np.floor(xs[-1])) + 6
    win = img[np.ix_(_border_index(np.arange(ay, by), h, border), _border_index(np.arange(ax, bx), w, border))]
    mx, my = np.meshgrid((xs - ax).astype(np.float32), (ys - ay).astype(np.float32))
    out = cv2.remap(win, mx, my, cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(len(ys), len(xs), -1)


def resize_with_border(img: np.ndarray, size: tuple[int, int], border: int, block: int = 2048) -> np.ndarray:
    """Lanczos-4 upscale to `size` (w, h) that reads past the edges with `border`; cv2.resize
    always clamps (replicates the edge pixels). The interior is cv2.resize's own result; only the
    bands whose kernel reaches past an edge are resampled (through cv2.remap, in blocks, on
    cv2.resize's sampling grid)."""
    h, w = img.shape[:2]
    W, H = size
    c = img.shape[2] if img.ndim == 3 else 1
    out = cv2.resize(img, (W, H), interpolation=cv2.INTER_LANCZOS4).reshape(H, W, c)
    sx, sy = w / W, h / H
    bx, by = min(W, math.ceil(5 / sx) + 1), min(H, math.ceil(5 / sy) + 1)  # outputs within 4-5 source px of an edge
    mid_y0, mid_y1 = by, max(by, H - by)
    # (rows, columns) of the four bands: top, bottom, then left and right between them
    bands = [(0, by, 0, W), (mid_y1, H, 0, W), (mid_y0, mid_y1, 0, bx), (mid_y0, mid_y1, max(bx, W - bx), W)]
    for y0, y1, x0, x1 in bands:
        for ya in range(y0, y1, block):
            for xa in range(x0, x1, block):
                ry, rx = np.arange(ya, min(y1, ya + block)), np.arange(xa, min(x1, xa + block))
                ys, xs = (ry + 0.5) * sy - 0.5, (rx + 0.5) * sx - 0.5
                out[ry[0] : ry[-1] + 1, rx[0] : rx[-1] + 1] = _lanczos_block(img, ys, xs, border)
    return out


def bleed_color(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Fill the colour of fully transparent pixels from their opaque neighbours (push-pull).

    Transparent pixels usually store black; a model that sees that black smears it into the
    visible edge (the dark fringe). Coarse-to-fine averaging of the visible colours fills the
    hidden ones with what surrounds them; visible pixels are left exactly as they were.
    """
    known = (alpha[..., 0] > 0).astype(np.float32)
    if known.all() or not known.any():
        return rgb
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    col = rgb.astype(np.float32) * known[..., None]
    w = known
    while True:
        levels.append((col, w))
        h, wd = w.shape
        if h <= 1 and wd <= 1:
            break
        size = (max(1, (wd + 1) // 2), max(1, (h + 1) // 2))
        col = cv2.resize(col, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0])
    fill = levels[-1][0] / np.maximum(levels[-1][1], 1e-8)[..., None]
    for col, w in reversed(levels[:-1]):
        h, wd = w.shape
        up = cv2.resize(fill, (wd, h), interpolation=cv2.INTER_LINEAR).reshape(h, wd, -1)
        mean = col / np.maximum(w, 1e-8)[..., None]
        a = np.clip(w, 0, 1)[..., None]
        fill = mean * a + up * (1 - a)
    out = np.where(known[..., None] > 0, rgb.astype(np.float32), fill)
    if rgb.dtype.kind == "u":
        out = np.clip(np.rint(out), 0, np.iinfo(rgb.dtype).max)
    return out.astype(rgb.dtype)


def _maxval(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else 1.0


# What `Upscaler` and `upscale_image` take as a model (see `as_loaded`).
ModelLike = Union[LoadedModel, str, "os.PathLike[str]", torch.nn.Module]


def outscaled(n: int, outscale: float) -> int:
    """A side's length after `--outscale`: n * outscale rounded half up (one rule for both sides,
    so an aspect ratio is not bent by ties going opposite ways), at least 1. The 1e-9 absorbs
    float error such as 229.99999999999997 for 230."""
    return max(1, math.floor(n * outscale + 0.5 + 1e-9))


def as_loaded(model: object) -> LoadedModel:
    """What `Upscaler` and `upscale_image` take as a model: a LoadedModel (from `load_model`), a
    model file's path or a bundled model's name, or an RRDBNet / SRVGGNetCompact module built in
    code (its own hyperparameters describe it)."""
    from esrforge.archs import ARCHS

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        from esrforge.modelio import load_model

        return load_model(model)
    arch = next((name for name, cls in ARCHS.items() if type(model) is cls), None)
    if arch is not None:
        assert isinstance(model, torch.nn.Module)
        return LoadedModel(model, describe(arch, "basicsr", model.hparams(), model, f"<{type(model).__name__}>"))
    what = "a state dict (use esrforge.modelio.from_state_dict(unwrap(sd)))" if isinstance(model, dict) else type(model).__name__
    raise TypeError(
        f"a model must be a LoadedModel (esrforge.load_model), a model file or bundled name, or an RRDBNet / "
        f"SRVGGNetCompact module; got {what}"
    )


class Upscaler:
    """Runs one model or a chain of models over images, tiled, on one device.

    tile: "auto" (largest that fits free memory, halved on out-of-memory), 0 (whole image), or
    a size in input pixels. margin: context run around each tile and discarded, in the network's
    own pixels: input pixels, or 2x / 4x as many for the pixel-unshuffle x2 / x1 RRDBNets, which
    run at half / quarter size. seamless: None, "tile", "mirror" or "replicate". outscale: final
    scale relative to the input (resized after the models), None to keep the models' scale.
    """

    def __init__(
        self,
        models: ModelLike | Sequence[ModelLike],
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile: int | str = "auto",
        margin: int = DEFAULT_MARGIN,
        seamless: str | None = None,
        outscale: float | None = None,
    ) -> None:
        single = isinstance(models, (LoadedModel, str, os.PathLike, torch.nn.Module, dict)) or not hasattr(models, "__iter__")
        self.models = [as_loaded(m) for m in ([models] if single else list(models))]  # one model, or a chain
        if not self.models:
            raise ValueError("no model given")
        # RGBA models (4 channels in and out) see the alpha with the colour; every other model gets
        # the colour, and the alpha runs on its own. The two ways do not mix within one chain.
        rgba = [(m.descriptor.in_ch, m.descriptor.out_ch) == (4, 4) for m in self.models]
        if any(m.descriptor.in_ch == 4 or m.descriptor.out_ch == 4 for m in self.models) and not all(rgba):
            raise ValueError("a 4-channel (RGBA) model takes 4 channels in and out, and chains only with other RGBA models")
        self.rgba = all(rgba)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.precision = precision
        note = slow_precision_note(resolve_precision(precision, self.device), self.device)  # refuses a bad name now
        if note:
            warnings.warn(note, stacklevel=2)
        if tile != "auto" and (not isinstance(tile, int) or isinstance(tile, bool) or tile < 0):
            raise ValueError(f"tile must be 'auto', 0 or a positive size, got {tile!r}")
        self.tile, self.margin = tile, margin
        if seamless is not None and seamless not in SEAMLESS_MODES:
            raise ValueError(f"seamless must be one of {', '.join(SEAMLESS_MODES)}, got {seamless!r}")
        self.seamless = seamless
        if outscale is not None and not 0 < outscale < float("inf"):
            raise ValueError(f"outscale must be a finite number > 0, got {outscale}")
        self.outscale = outscale
        self._warned_depth = False
        self._runners: dict[tuple[int, torch.dtype], TileRunner] = {}
        self._tiles: dict[tuple[int, torch.dtype], int] = {}

    @property
    def scale(self) -> int:
        s = 1
        for m in self.models:
            s *= m.descriptor.scale
        return s

    @property
    def fp32_rescues(self) -> int:
        return sum(r.fp32_rescues for r in self._runners.values())

    def _runner(self, i: int, dtype: torch.dtype) -> TileRunner:
        key = (i, dtype)
        if key not in self._runners:
            same = next((r for (j, _), r in self._runners.items() if j == i), None)
            # One copy of the weights per model on the device: the fp32 rescue runner shares it.
            module = same.module if same is not None else self.models[i].module
            self._runners[key] = TileRunner(module, self.models[i].descriptor, self.device, dtype, copy=same is None)
        return self._runners[key]

    def _run_model(self, i: int, img: np.ndarray, out: np.ndarray, dtype: torch.dtype, progress: Progress | None) -> np.ndarray:
        """Run model i over `img` into `out` (H*s x W*s x C, possibly a channel view)."""
        desc = self.models[i].descriptor
        H, W, C = img.shape
        s = desc.scale
        f = img.astype(np.float32)
        if img.dtype.kind == "u":
            f *= np.float32(1.0 / _maxval(img.dtype))
        # Which slices of the image go through the model together.
        if C == desc.in_ch:
            groups = [(slice(0, C), False)]
        elif desc.in_ch == 3 and C == 1:
            groups = [(slice(0, 1), True)]
        elif desc.in_ch == 1:
            groups = [(slice(c, c + 1), False) for c in range(C)]
        else:
            raise ValueError(f"model takes {desc.in_ch} channels; the image has {C}")
        margin = self.margin * desc.multiple_of  # the same context for unshuffle models' smaller grid
        pad = margin if self.seamless else 0
        runner = self._runner(i, dtype)
        key = (i, dtype)
        if self.tile == "auto":
            tile = self._tiles.get(key) or auto_tile(
                working_set_per_px(desc, torch.finfo(dtype).bits // 8), self.device, margin, desc.multiple_of
            )
        else:
            tile = int(self.tile)
        for sl, gray in groups:
            part = f[:, :, sl]
            if gray:
                part = np.repeat(part, 3, axis=2)
            if pad:
                part = np.pad(part, ((pad, pad), (pad, pad), (0, 0)), mode=SEAMLESS_MODES[self.seamless])
            tile = upscale_tiled(
                runner,
                part,
                out[:, :, sl],
                scale=s,
                tile=tile,
                margin=margin,
                region=Region(pad, pad, H, W),
                multiple_of=desc.multiple_of,
                progress=progress,
            )
        if self.tile == "auto":
            self._tiles[key] = tile  # remember a size that worked (smaller after an OOM)
        return out

    def upscale(self, img: np.ndarray, progress: Progress | None = None) -> np.ndarray:
        """Upscale an H x W (x C) uint8, uint16 or float32 ([0, 1]) image; same dtype out.

        C is 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA); alpha is upscaled on its own."""
        if not isinstance(img, np.ndarray):
            raise TypeError(f"expected a numpy image (H x W or H x W x C), got {type(img).__name__}; "
                            "esrforge.images.read_image reads files")
        if img.ndim == 2:
            return self.upscale(img[:, :, None], progress)[:, :, 0]
        if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"expected an H x W x C image with 1, 2, 3 or 4 channels, got shape {img.shape}")
        if img.dtype not in (np.uint8, np.uint16, np.float32):
            raise ValueError(f"expected uint8, uint16 or float32 samples, got {img.dtype}")
        if min(img.shape[:2]) < 1:
            raise ValueError(f"empty image {img.shape}")
        img, note = clip_to_unit(img)  # a NaN would spread over every output pixel it reaches
        if note is not None:
            warnings.warn(f"the image's {note}", stacklevel=2)
        dtype = resolve_precision(self.precision, self.device, high_bit_depth=img.dtype != np.uint8)
        if img.dtype != np.uint8 and dtype != torch.float32 and not self._warned_depth:
            self._warned_depth = True  # once: a folder of 16-bit images would repeat it for each
            warnings.warn(f"precision {self.precision}: 16-bit and float images keep about 8 significant bits in "
                          "half precision (errors near 1/255, not 1/65535); auto or fp32 keeps their precision", stacklevel=2)
        if self.rgba:
            return self._resize_to_outscale(self._upscale_rgba(img, dtype, progress), img)
        has_alpha = img.shape[2] in (2, 4)
        color, alpha = img, None
        if has_alpha:
            color, alpha = img[:, :, :-1], img[:, :, -1:]
            if alpha.min() == _maxval(img.dtype):
                alpha = None  # opaque: no need to upscale it, filled back in below
            else:
                color = bleed_color(color, alpha)
        # Between chained models, keep 16 bits: more precise than 8, a quarter of float32. The
        # last model writes straight into the final array (alpha into its last channel), so no
        # full-size copy is made.
        mid = np.uint16 if img.dtype != np.float32 else np.float32
        h, w = img.shape[:2]
        for i, m in enumerate(self.models):
            h, w = h * m.descriptor.scale, w * m.descriptor.scale
            last = i == len(self.models) - 1
            out = np.empty((h, w, img.shape[2]), dtype=img.dtype if last else mid)
            color = self._run_model(i, color, out[:, :, : color.shape[2]], dtype, progress)
            if alpha is not None:
                alpha = self._run_model(i, alpha, out[:, :, -1:], dtype, progress)
        if has_alpha and alpha is None:
            out[:, :, -1] = _maxval(img.dtype)
        return self._resize_to_outscale(out, img)

    def _upscale_rgba(self, img: np.ndarray, dtype: torch.dtype, progress: Progress | None) -> np.ndarray:
        """Through RGBA models: gray is made RGB and a missing alpha opaque for the model, and the
        result is given back in the image's own channels (gray as the mean of R, G and B)."""
        c, maxval = img.shape[2], _maxval(img.dtype)
        rgb = np.repeat(img[:, :, :1], 3, axis=2) if c in (1, 2) else img[:, :, :3]
        alpha = img[:, :, -1:] if c in (2, 4) else np.full((*img.shape[:2], 1), maxval, img.dtype)
        x = np.concatenate([rgb, alpha], axis=2)
        mid = np.uint16 if img.dtype != np.float32 else np.float32
        for i, m in enumerate(self.models):
            h, w = x.shape[0] * m.descriptor.scale, x.shape[1] * m.descriptor.scale
            out = np.empty((h, w, 4), dtype=img.dtype if i == len(self.models) - 1 else mid)
            x = self._run_model(i, x, out, dtype, progress)
        if c == 4:
            return x
        if c == 3:
            return np.ascontiguousarray(x[:, :, :3])
        gray = x[:, :, :3].astype(np.float32).mean(axis=2, keepdims=True)
        gray = gray if img.dtype == np.float32 else np.floor(gray + 0.5).astype(img.dtype)
        return gray if c == 1 else np.concatenate([gray, x[:, :, 3:]], axis=2)

    def _resize_to_outscale(self, color: np.ndarray, img: np.ndarray) -> np.ndarray:
        """The final resize to `outscale` (relative to the input `img`), if one is asked for."""
        if self.outscale is not None and self.outscale != self.scale:
            h, w = img.shape[:2]
            size = (outscaled(w, self.outscale), outscaled(h, self.outscale))
            c = color.shape[2]
            if self.outscale < self.scale:  # area averaging stays inside the image: no border to mind
                color = cv2.resize(color, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], c)
            elif self.seamless:  # Lanczos reaches 4 px past the edge: there the texture continues
                color = resize_with_border(color, size, _CV2_BORDERS[self.seamless])
            else:
                color = cv2.resize(color, size, interpolation=cv2.INTER_LANCZOS4).reshape(size[1], size[0], c)
            if color.dtype == np.float32:
                np.clip(color, 0, 1, out=color)
        return color


def upscale_image(
    img: np.ndarray,
    model: ModelLike | Sequence[ModelLike],
    *,
    device: str = "auto",
    precision: str = "auto",
    tile: int | str = "auto",
    seamless: str | None = None,
    outscale: float | None = None,
) -> np.ndarray:
    """Upscale one numpy image with a model (or a chain); see `Upscaler` and `as_loaded`.

    Each call prepares the model for the device anew: for many images (a folder, video frames)
    make one `Upscaler` and call its `upscale` for each."""
    return Upscaler(model, device=device, precision=precision, tile=tile, seamless=seamless, outscale=outscale).upscale(img)
