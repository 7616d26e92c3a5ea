"""Scoring a model as papers and BasicSR's test mode do, shared by training's validation and
`esrforge eval MODEL HR_DIR`: HR mod-cropped to the scale, LR given or MATLAB-bicubic of that HR,
8-bit SR, PSNR/SSIM on the Y channel with the border cropped, and RGB PSNR."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from esrforge.data.datasets import to_tensor
from esrforge.data.resize import imresize
from esrforge.metrics.psnr_ssim import psnr, ssim

if TYPE_CHECKING:
    from esrforge.infer import Upscaler


def to_u8(x: Tensor) -> np.ndarray:
    """1 x C x H x W float in [0, 1] -> H x W x C uint8 (models are scored on 8-bit images, as papers do)."""
    return (x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def score_pair(
    up: Upscaler, hr_img: np.ndarray, lr_img: np.ndarray | None, *, scale: int, channels: int, crop_border: int
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    """Scores of `up` on one HR image (and its LR, or None for MATLAB bicubic of the HR), and the
    8-bit LR, SR and HR images scored: {"psnr", "ssim"} on Y, "psnr_rgb"."""
    hr = to_tensor(hr_img, channels).unsqueeze(0)
    h, w = hr.shape[-2] // scale * scale, hr.shape[-1] // scale * scale
    hr = hr[..., :h, :w]
    if lr_img is not None:
        lr = to_tensor(lr_img, channels).unsqueeze(0)[..., : h // scale, : w // scale]
    else:
        with torch.no_grad():
            lr = imresize(hr, 1 / scale)
    lr8, hr8 = to_u8(lr), to_u8(hr)
    sr8 = up.upscale(lr8)
    scores = {
        "psnr": psnr(sr8, hr8, crop_border=crop_border, y_channel=True),
        "ssim": ssim(sr8, hr8, crop_border=crop_border, y_channel=True),
        "psnr_rgb": psnr(sr8, hr8, crop_border=crop_border),
    }
    return scores, lr8, sr8, hr8


def eval_command(
    hr_dir: Path,
    *,
    models: Sequence[str] = (),
    lr_dir: Path | None = None,
    crop_border: int | None = None,
    save: Path | None = None,
    as_json: bool = False,
    device: str = "auto",
    precision: str = "auto",
) -> int:
    """`esrforge eval HR_DIR -m MODEL`: a model file (or a chain; default: the bundled default) scored on a test set such as
    Set5/Set14 the way papers and BasicSR's test mode score it (see `score_pair`); LR images come
    from `lr_dir` (same relative names) or are made by MATLAB bicubic. Returns 1 if any image
    failed or none was scored."""
    from esrforge.data.datasets import scan_images
    from esrforge.images import ImageError, read_image, write_image
    from esrforge.infer import Upscaler
    from esrforge.metrics.report import print_scores
    from esrforge.modelio import DEFAULT_MODEL, load_model

    if crop_border is not None and crop_border < 0:
        print(f"esrforge eval: error: --crop-border must be >= 0, got {crop_border}", file=sys.stderr)
        return 1
    loaded = [load_model(m) for m in models or [DEFAULT_MODEL]]
    scale = math.prod(m.descriptor.scale for m in loaded)
    channels = loaded[0].descriptor.in_ch
    border = scale if crop_border is None else crop_border
    up = Upscaler(loaded, device=device, precision=precision)
    hr = scan_images([hr_dir]) if hr_dir.is_dir() else {}
    if not hr:
        print(f"esrforge eval: error: {hr_dir}: no images (give a folder of HR images)", file=sys.stderr)
        return 1
    lr = scan_images([lr_dir]) if lr_dir is not None else {}
    rows, failed = [], 0
    for key, hr_path in hr.items():
        try:
            if lr_dir is not None and key not in lr:
                raise ImageError(f"{hr_path}: no LR partner in {lr_dir}")
            lr_img = read_image(lr[key]) if lr_dir is not None else None
            got, _, sr8, _ = score_pair(up, read_image(hr_path), lr_img, scale=scale, channels=channels, crop_border=border)
            if save is not None:
                write_image(save / f"{key}.png", sr8)
        except (ValueError, OSError) as e:  # ImageError is a ValueError; the file is named
            print(f"esrforge eval: error: {e}", file=sys.stderr)
            failed += 1
            continue
        rows.append({"name": key, **got})
    if rows:
        print_scores(rows, ("psnr", "ssim", "psnr_rgb"), as_json=as_json)
    return 1 if failed or not rows else 0


__all__ = ["eval_command", "score_pair", "to_u8"]
