"""PSNR and SSIM with the conventions SR papers report them by (MATLAB's, as BasicSR computes them).

- Images are compared in float64 on the 0-255 scale: uint8 as is, uint16 scaled by 255/65535,
  float images are taken to be in [0, 1].
- `y_channel` compares the ITU-R BT.601 luma Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in
  [0, 1]), on the 0-255 scale and not rounded (as BasicSR; MATLAB's rgb2ycbcr on uint8 input
  rounds Y to whole levels, which moves PSNR by about 0.01 dB). Gray images are compared as they
  are.
- Alpha is left out: gray + alpha and RGBA images are compared on their gray or RGB channels, as
  BasicSR does (it reads images without their alpha) and as papers report.
- `crop_border` pixels are removed on every side before anything is computed.
- SSIM: 11x11 Gaussian window (sigma 1.5), C1 = (0.01*255)^2, C2 = (0.03*255)^2, 'valid'
  filtering (only windows that fit inside the image, as Wang's ssim_index.m), mean over the map
  and then over channels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

_Y = (65.481, 128.553, 24.966)
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
WINDOW = 11
_SIGMA = 1.5


def _to_255(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ValueError(f"expected an H x W x C image, got an array of shape {img.shape}")
    if img.dtype in (np.uint8, np.uint16):
        return img.astype(np.float64) * (255.0 / np.iinfo(img.dtype).max)
    if img.dtype.kind == "f":
        return img.astype(np.float64) * 255.0
    # Signed or bool arrays have no agreed range; guessing would give plausible wrong numbers.
    raise ValueError(f"unsupported image dtype {img.dtype}: use uint8, uint16 or float in [0, 1]")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """H x W x 3 (or 4; alpha ignored) image -> H x W x 1 float64 BT.601 luma on the 0-255 scale.

    Accepts uint8, uint16 (scaled to [0, 1] first) and float images in [0, 1].
    """
    x = _to_255(img)
    if x.shape[2] not in (3, 4):
        raise ValueError(f"rgb_to_y needs an RGB(A) image, got {x.shape[2]} channel(s)")
    return 16.0 + (x[:, :, :3] / 255.0) @ np.array(_Y)[:, None]


def _crop(shape_hw: tuple[int, int], crop_border: int) -> None:
    """Refuse a border that is negative or leaves no pixels (slicing would silently misbehave)."""
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    h, w = shape_hw
    if 2 * crop_border >= min(h, w):
        raise ValueError(f"crop_border {crop_border} leaves no pixels of a {w}x{h} image")


def _prepare(a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    x, y = _to_255(a), _to_255(b)
    _crop(x.shape[:2], crop_border)
    if x.shape[2] in (2, 4):  # the colour without its alpha
        x, y = x[:, :, :-1], y[:, :, :-1]
    if y_channel and x.shape[2] == 3:
        x, y = rgb_to_y(a), rgb_to_y(b)
    if crop_border:
        c = crop_border
        x, y = x[c:-c, c:-c], y[c:-c, c:-c]
    return x, y


def psnr(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB over all (compared) channels on the 0-255 scale; inf for identical images."""
    x, y = _prepare(a, b, crop_border, y_channel)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gauss_1d() -> np.ndarray:
    r = np.arange(WINDOW, dtype=np.float64) - WINDOW // 2
    g = np.exp(-(r**2) / (2 * _SIGMA**2))
    return g / g.sum()


def _gauss_window() -> np.ndarray:
    g = _gauss_1d()
    return np.outer(g, g)  # sums to 1 because g does


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    w = _gauss_window()
    k = WINDOW // 2

    def filt(img: np.ndarray) -> np.ndarray:
        # Correlate, then drop the rim where the window overhangs: MATLAB's filter2(..., 'valid').
        return cv2.filter2D(img, -1, w, borderType=cv2.BORDER_REFLECT)[k:-k, k:-k]

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    m = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx**2 + my**2 + C1) * (sxx + syy + C2))
    return float(m.mean())


def ssim(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Mean SSIM (mean over channels for RGB); 1.0 for identical images.

    Needs at least 11x11 pixels after cropping ('valid' filtering has no windows otherwise).
    """
    x, y = _prepare(a, b, crop_border, y_channel)
    if min(x.shape[:2]) < WINDOW:
        raise ValueError(f"SSIM needs at least {WINDOW}x{WINDOW} pixels after cropping, got {x.shape[1]}x{x.shape[0]}")
    return float(np.mean([_ssim_plane(np.ascontiguousarray(x[:, :, c]), np.ascontiguousarray(y[:, :, c]))
                          for c in range(x.shape[2])]))


# --- torch versions for validation during training (N, C, H, W float in [0, 1]) -------------------
# Computed in float64 so they agree with the numpy versions whatever the input precision.


def _prepare_t(sr: Tensor, hr: Tensor, crop_border: int, y_channel: bool) -> tuple[Tensor, Tensor]:
    if sr.shape != hr.shape:
        raise ValueError(f"images differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if sr.ndim != 4:
        raise ValueError(f"expected N x C x H x W tensors, got shape {tuple(sr.shape)}")
    _crop((sr.shape[2], sr.shape[3]), crop_border)
    x, y = sr.double() * 255.0, hr.double() * 255.0
    if x.shape[1] in (2, 4):  # the colour without its alpha
        x, y = x[:, :-1], y[:, :-1]
    if y_channel and x.shape[1] == 3:
        w = torch.tensor(_Y, dtype=torch.float64, device=x.device).view(1, 3, 1, 1) / 255.0
        x = 16.0 + (x[:, :3] * w).sum(1, keepdim=True)
        y = 16.0 + (y[:, :3] * w).sum(1, keepdim=True)
    if crop_border:
        c = crop_border
        x, y = x[..., c:-c, c:-c], y[..., c:-c, c:-c]
    return x, y


def psnr_torch(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Per-image PSNR in dB, shape (N,), float64; inf where an image pair is identical."""
    x, y = _prepare_t(sr, hr, crop_border, y_channel)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)


def ssim_torch(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Per-image SSIM, shape (N,), float64, mean over channels; same definition as `ssim`."""
    x, y = _prepare_t(sr, hr, crop_border, y_channel)
    if min(x.shape[2:]) < WINDOW:
        raise ValueError(f"SSIM needs at least {WINDOW}x{WINDOW} pixels after cropping, got {x.shape[3]}x{x.shape[2]}")
    c = x.shape[1]
    w = torch.from_numpy(_gauss_window()).to(x.device).expand(c, 1, WINDOW, WINDOW)

    def filt(img: Tensor) -> Tensor:
        return F.conv2d(img, w, groups=c)  # no padding: 'valid'; the window is symmetric, so conv = correlation

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    m = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx**2 + my**2 + C1) * (sxx + syy + C2))
    return m.flatten(1).mean(1)
