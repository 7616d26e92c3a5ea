"""PSNR and SSIM with MATLAB's conventions (as BasicSR and the papers compute them).

Images are compared on the 0-255 scale in float64; `y_channel` uses the ITU-R BT.601 luma
Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]); `crop_border` pixels are removed on
every side; SSIM uses an 11x11 Gaussian window with sigma 1.5 and 'valid' filtering.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

_Y = (65.481, 128.553, 24.966)
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _to_255(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.dtype.kind == "u":
        return img.astype(np.float64) * (255.0 / np.iinfo(img.dtype).max)
    return img.astype(np.float64) * 255.0  # float images are in [0, 1]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """H x W x 3 image (any supported dtype) -> H x W x 1 BT.601 luma on the 0-255 scale."""
    x = _to_255(img)[:, :, :3] / 255.0
    return (16.0 + x @ np.array(_Y))[:, :, None]


def _prepare(a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    x, y = (rgb_to_y(a), rgb_to_y(b)) if y_channel and a.ndim == 3 and a.shape[2] >= 3 else (_to_255(a), _to_255(b))
    if crop_border:
        x, y = x[crop_border:-crop_border, crop_border:-crop_border], y[crop_border:-crop_border, crop_border:-crop_border]
    return x, y


def psnr(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB over all channels (inf for identical images)."""
    x, y = _prepare(a, b, crop_border, y_channel)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gauss_window() -> np.ndarray:
    r = np.arange(11, dtype=np.float64) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    g /= g.sum()
    return np.outer(g, g)


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    import cv2

    w = _gauss_window()

    def filt(img: np.ndarray) -> np.ndarray:  # 'valid' correlation: drop the 5-pixel rim
        return cv2.filter2D(img, -1, w, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    m = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx**2 + my**2 + C1) * (sxx + syy + C2))
    return float(m.mean())


def ssim(a: np.ndarray, b: np.ndarray, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Mean SSIM over channels (1.0 for identical images)."""
    x, y = _prepare(a, b, crop_border, y_channel)
    if min(x.shape[:2]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {x.shape[1]}x{x.shape[0]}")
    return float(np.mean([_ssim_plane(x[:, :, c], y[:, :, c]) for c in range(x.shape[2])]))


# --- torch versions for validation during training (N, C, H, W in [0, 1]) ------------------------


def _prepare_t(sr: Tensor, hr: Tensor, crop_border: int, y_channel: bool) -> tuple[Tensor, Tensor]:
    if sr.shape != hr.shape:
        raise ValueError(f"images differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    x, y = sr.double() * 255.0, hr.double() * 255.0
    if y_channel and x.shape[1] >= 3:
        w = torch.tensor(_Y, dtype=torch.float64, device=x.device).view(1, 3, 1, 1) / 255.0
        x = 16.0 + (x[:, :3] * w).sum(1, keepdim=True)
        y = 16.0 + (y[:, :3] * w).sum(1, keepdim=True)
    if crop_border:
        x, y = x[..., crop_border:-crop_border, crop_border:-crop_border], y[..., crop_border:-crop_border, crop_border:-crop_border]
    return x, y


def psnr_torch(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Per-image PSNR (N,) in dB."""
    x, y = _prepare_t(sr, hr, crop_border, y_channel)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)


def ssim_torch(sr: Tensor, hr: Tensor, crop_border: int = 0, y_channel: bool = False) -> Tensor:
    """Per-image SSIM (N,), mean over channels."""
    x, y = _prepare_t(sr, hr, crop_border, y_channel)
    c = x.shape[1]
    w = torch.from_numpy(_gauss_window()).to(x.device).expand(c, 1, 11, 11)

    def filt(img: Tensor) -> Tensor:
        return F.conv2d(img, w, groups=c)  # 'valid'

    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    m = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx**2 + my**2 + C1) * (sxx + syy + C2))
    return m.flatten(1).mean(1)
