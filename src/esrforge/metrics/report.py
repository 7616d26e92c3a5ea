"""`esrforge metrics SR HR`: PSNR/SSIM of upscaled images against their references."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from esrforge.images import IMAGE_SUFFIXES, ImageError, read_image
from esrforge.metrics.psnr_ssim import psnr, ssim


def _index(root: Path) -> dict[str, Path]:
    return {
        f.relative_to(root).with_suffix("").as_posix(): f
        for f in sorted(root.rglob("*"))
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    }


def metrics_command(sr: Path, hr: Path, *, crop_border: int = 0, y_channel: bool = False, as_json: bool = False) -> int:
    """Compare SR images with HR images (two files, or two folders matched by relative path
    and stem). JSON: {"mean": {"psnr", "ssim"}, "images": [{"name", "psnr", "ssim"}]}, where an
    infinite PSNR (identical images) is written as null. Returns 1 if any image failed."""
    if sr.is_file() and hr.is_file():
        pairs = [(hr.name, sr, hr)]
        problems: list[str] = []
    elif sr.is_dir() and hr.is_dir():
        s, h = _index(sr), _index(hr)
        pairs = [(h[k].relative_to(hr).as_posix(), s[k], h[k]) for k in h if k in s]
        problems = [f"{h[k]}: no SR image for it in {sr}" for k in h if k not in s]
        problems += [f"{s[k]}: no HR image for it in {hr}" for k in s if k not in h]
    else:
        print(f"esrforge metrics: error: give two image files or two folders (got {sr}, {hr})", file=sys.stderr)
        return 1
    rows = []
    for name, s_path, h_path in pairs:
        try:
            a, b = read_image(s_path), read_image(h_path)
            if a.shape != b.shape:
                raise ValueError(f"{s_path} is {a.shape[1]}x{a.shape[0]}x{a.shape[2]}, {h_path} is {b.shape[1]}x{b.shape[0]}x{b.shape[2]}")
            rows.append({"name": name, "psnr": psnr(a, b, crop_border=crop_border, y_channel=y_channel),
                         "ssim": ssim(a, b, crop_border=crop_border, y_channel=y_channel)})
        except (ImageError, ValueError) as e:
            problems.append(str(e))
    for p in problems:
        print(f"esrforge metrics: error: {p}", file=sys.stderr)
    if not rows:
        print("esrforge metrics: error: no image pairs to compare", file=sys.stderr)
        return 1
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("psnr", "ssim")}
    if as_json:
        clean = lambda v: None if isinstance(v, float) and math.isinf(v) else v  # noqa: E731
        print(json.dumps({"mean": {k: clean(v) for k, v in mean.items()},
                          "images": [{k: clean(v) for k, v in r.items()} for r in rows]}, indent=2))
    else:
        width = max(len(r["name"]) for r in rows + [{"name": "mean"}])
        for r in rows + [{"name": "mean", **mean}]:
            print(f"{r['name']:<{width}}  PSNR {r['psnr']:8.4f} dB  SSIM {r['ssim']:.4f}")
    return 1 if problems else 0
