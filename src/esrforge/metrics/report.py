"""`esrforge metrics SR HR`: PSNR/SSIM of upscaled images against their references."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2

from esrforge.images import IMAGE_SUFFIXES, ImageError, read_image, visible_files
from esrforge.metrics.psnr_ssim import psnr, ssim

_PREFIX = "esrforge metrics: error:"


def _error(msg: str) -> None:
    print(f"{_PREFIX} {msg}", file=sys.stderr)


def _index(root: Path, problems: list[str]) -> dict[str, Path]:
    """Images under `root` keyed by relative path without extension (upscalers change formats).
    Hidden files are left out, as the upscaler and the datasets leave them out."""
    found: dict[str, list[Path]] = {}
    for f in sorted(visible_files(root)):
        if f.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(f.relative_to(root).with_suffix("").as_posix(), []).append(f)
    for files in found.values():
        if len(files) > 1:  # a.png next to a.jpg: either could be meant, so compare neither
            names = ", ".join(map(str, files))
            problems.append(f"{names}: same name with different extensions; cannot tell which to compare")
    return {k: files[0] for k, files in found.items() if len(files) == 1}


def _json_number(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no inf/nan


def metrics_command(sr: Path, hr: Path, *, crop_border: int = 0, y_channel: bool = False, as_json: bool = False) -> int:
    """Compare SR images with their HR references and print the scores.

    SR and HR are two image files, or two folders searched recursively whose images are matched
    by relative path and stem (the extension may differ). An HR up to 7 pixels larger than its SR is cropped to it (mod-crop: its LR was made from the
    HR cut to a multiple of the scale), with a note. Prints one line per image and the mean,
    or with `as_json` exactly::

        {"mean": {"psnr": ..., "ssim": ...}, "images": [{"name": ..., "psnr": ..., "ssim": ...}]}

    where `name` is the HR file's path relative to HR (its file name in single-file mode), and an
    infinite PSNR (identical images; also a mean that includes one) is written as null, as JSON
    has no infinity. Unmatched images, size mismatches and unreadable files are reported on
    stderr with their paths and skipped. Returns 1 if any image failed or nothing was compared,
    else 0; expected user errors are printed, never raised.
    """
    sr, hr = Path(sr), Path(hr)
    if crop_border < 0:
        _error(f"--crop-border must be >= 0, got {crop_border}")
        return 1
    for p in (sr, hr):
        if not p.exists():
            _error(f"{p}: no such file or folder")
            return 1
    problems: list[str] = []
    if sr.is_file() and hr.is_file():
        pairs = [(hr.name, sr, hr)]
    elif sr.is_dir() and hr.is_dir():
        s, h = _index(sr, problems), _index(hr, problems)
        pairs = [(h[k].relative_to(hr).as_posix(), s[k], h[k]) for k in h if k in s]
        problems += [f"{h[k]}: no SR image for it in {sr}" for k in h if k not in s]
        problems += [f"{s[k]}: no HR image for it in {hr}" for k in s if k not in h]
    else:
        _error(f"give two image files or two folders (got {'folder' if sr.is_dir() else 'file'} {sr}, "
               f"{'folder' if hr.is_dir() else 'file'} {hr})")
        return 1

    rows: list[dict] = []
    for name, s_path, h_path in pairs:
        try:
            a, b = read_image(s_path), read_image(h_path)
            dh, dw = b.shape[0] - a.shape[0], b.shape[1] - a.shape[1]
            if a.shape[2] == b.shape[2] and 0 <= dh < 8 and 0 <= dw < 8 and dh + dw > 0:
                # HR not a multiple of the scale: the LR was made from HR mod-cropped (BasicSR's
                # and esrforge degrade's rule), so the SR covers its top-left part.
                print(f"note: {h_path} is {_dims(b.shape)}; compared mod-cropped to {s_path}'s {a.shape[1]}x{a.shape[0]}", file=sys.stderr)
                b = b[: a.shape[0], : a.shape[1]]
            if a.shape != b.shape:
                raise ValueError(f"{s_path} is {_dims(a.shape)} but {h_path} is {_dims(b.shape)}")
            rows.append({"name": name, "psnr": psnr(a, b, crop_border=crop_border, y_channel=y_channel),
                         "ssim": ssim(a, b, crop_border=crop_border, y_channel=y_channel)})
        except (ImageError, ValueError, OSError, cv2.error) as e:
            msg = str(e)
            problems.append(msg if str(s_path) in msg or str(h_path) in msg else f"{s_path} vs {h_path}: {msg}")
    for p in problems:
        _error(p)
    if not rows:
        _error(f"none of the {len(pairs)} image pair(s) in {sr} and {hr} could be compared" if pairs
               else f"no image pairs to compare in {sr} and {hr}")
        return 1

    print_scores(rows, ("psnr", "ssim"), as_json=as_json)
    return 1 if problems else 0


_LABELS = {"psnr": "PSNR {:8.4f} dB", "ssim": "SSIM {:.4f}", "psnr_rgb": "RGB PSNR {:8.4f} dB"}


def print_scores(rows: list[dict], keys: tuple[str, ...], *, as_json: bool) -> None:
    """One line per image and the mean, or `{"mean": {...}, "images": [{"name": ..., ...}]}`."""
    mean = {k: math.fsum(r[k] for r in rows) / len(rows) for k in keys}
    if as_json:
        out = {"mean": {k: _json_number(v) for k, v in mean.items()},
               "images": [{"name": r["name"], **{k: _json_number(r[k]) for k in keys}} for r in rows]}
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        width = max(len(r["name"]) for r in [*rows, {"name": "mean"}])
        for r in [*rows, {"name": "mean", **mean}]:
            print(f"{r['name']:<{width}}  " + "  ".join(_LABELS[k].format(r[k]) for k in keys))


def _dims(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]} with {shape[2]} channel(s)"
