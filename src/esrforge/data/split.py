"""Cut large training images into overlapping sub-images (BasicSR's extract_subimages step).

Training reads a whole image for every random crop. A 2K PNG (DIV2K, Flickr2K) takes tens of
milliseconds to decode for a 128-256 px crop, so data loading, not the network, sets the pace;
cut once into 480 px sub-images (step 240, BasicSR's settings), each crop decodes a few times
faster. Sub-images are lossless (PNG; float TIFFs stay float TIFF) and keep the bit depth,
channels and colour profile of their image. With LR images given, both sides are cut on the LR
grid at the same places, so pairs stay aligned and keep matching names.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esrforge.data.datasets import DatasetError, pair_sizes_match, scan_images
from esrforge.data.degrade import run_file_jobs
from esrforge.fileio import file_error_text
from esrforge.images import IMAGE_SUFFIXES, read_image_and_metadata, visible_files, write_image
from esrforge.infer.tiling import Progress


def positions(length: int, size: int, step: int, threshold: int = 0) -> list[int]:
    """Start offsets of `size`-long windows `step` apart along `length`, plus one flush with the
    far edge when more than `threshold` pixels would be left over. A side shorter than `size`
    gives one window, the whole side."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if length - (starts[-1] + size) > threshold:
        starts.append(length - size)
    return starts


@dataclass(frozen=True)
class SplitSettings:
    size: int = 480
    step: int = 240
    threshold: int = 0
    scale: int = 1  # LR = HR / scale; cuts are placed on the LR grid when LR images are given


def split_image(hr_path: Path, hr_out: Path, settings: SplitSettings, lr_path: Path | None = None, lr_out: Path | None = None) -> int:
    """Write the sub-images of one image (and of its LR partner) as `<hr_out>_s001.png`, ...;
    returns how many were written."""
    s = settings
    hr, meta = read_image_and_metadata(hr_path)
    keep = meta.colour_only()
    lr = lr_meta = None
    if lr_path is not None:
        lr, lr_meta = read_image_and_metadata(lr_path)
        if not pair_sizes_match(hr.shape[:2], lr.shape[:2], s.scale):
            raise DatasetError(f"{lr_path} ({lr.shape[1]}x{lr.shape[0]}) is not {hr_path} ({hr.shape[1]}x{hr.shape[0]}) / {s.scale}")
    k = s.scale if lr is not None else 1  # cut on the LR grid; HR offsets are multiples of the scale
    grid_h = min(lr.shape[0], hr.shape[0] // k) if lr is not None else hr.shape[0]
    grid_w = min(lr.shape[1], hr.shape[1] // k) if lr is not None else hr.shape[1]
    size, step, threshold = s.size // k, s.step // k, s.threshold // k
    ys, xs = positions(grid_h, size, step, threshold), positions(grid_w, size, step, threshold)
    ext = ".tiff" if hr.dtype == np.float32 else ".png"  # lossless, and float stays float
    for n, (y, x) in enumerate(itertools.product(ys, xs), 1):
        h, w = min(size, grid_h), min(size, grid_w)
        write_image(_named(hr_out, n, ext), hr[y * k : (y + h) * k, x * k : (x + w) * k], metadata=keep)
        if lr is not None and lr_out is not None and lr_meta is not None:
            lr_ext = ".tiff" if lr.dtype == np.float32 else ".png"
            write_image(_named(lr_out, n, lr_ext), lr[y : y + h, x : x + w], metadata=lr_meta.colour_only())
    return len(ys) * len(xs)


def _named(base: Path, n: int, ext: str) -> Path:
    return base.with_name(f"{base.name}_s{n:03d}{ext}")


def _job(args: tuple[Path, Path, SplitSettings, Path | None, Path | None]) -> int:
    return split_image(*args)


def split_folder(
    hr_dir: Path,
    out_dir: Path,
    settings: SplitSettings,
    *,
    lr_dir: Path | None = None,
    lr_out_dir: Path | None = None,
    workers: int = 0,
    progress: Progress | None = None,
) -> tuple[int, list[str]]:
    """Cut every image under `hr_dir` (and its LR partner under `lr_dir`) into `out_dir`
    (and `lr_out_dir`), mirroring sub-folders. Returns (sub-images written, per-file errors).
    `progress` (a tqdm bar, say) gets its total and one update per image."""
    s = settings
    if s.size < 16 or s.step < 1 or s.step > s.size or s.threshold < 0:
        raise DatasetError(f"--size {s.size} --step {s.step} --threshold {s.threshold}: need size >= 16, 1 <= step <= size "
                           "(a larger step leaves pixels out) and threshold >= 0")
    if lr_dir is not None and (s.size % s.scale or s.step % s.scale or lr_out_dir is None):
        raise DatasetError(f"with --lr: --lr-output is needed, and --size {s.size} and --step {s.step} must be multiples "
                           f"of --scale {s.scale} (the LR side is cut at size / scale)")
    outputs = [out_dir] + ([lr_out_dir] if lr_out_dir is not None else [])
    for src, dst in itertools.product([hr_dir] + ([lr_dir] if lr_dir else []), outputs):
        if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
            raise DatasetError(f"{dst}: the output folder must not be an input folder or inside one")
    for dst in outputs:
        if dst.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in visible_files(dst)):
            raise DatasetError(f"{dst}: already holds images (an earlier split?); give an empty or new folder, "
                               "so sub-images of other settings do not mix with these")
    hr = scan_images([hr_dir])
    if not hr:
        raise DatasetError(f"{hr_dir}: no images found")
    lr = scan_images([lr_dir]) if lr_dir is not None else {}
    errors = [f"{hr[key]}: no LR partner in {lr_dir}" for key in hr if lr_dir is not None and key not in lr]
    jobs = [(hr[key], out_dir / key, s, lr.get(key), lr_out_dir / key if lr_out_dir else None)
            for key in hr if lr_dir is None or key in lr]
    written = 0
    if progress is not None:
        progress.total = len(jobs)
    for job, count, exc in run_file_jobs(_job, jobs, workers=workers):
        if exc is None:
            written += count or 0
        else:
            errors.append(file_error_text(job[0], exc))
        if progress is not None:
            progress.update(1)
    return written, errors


__all__ = ["SplitSettings", "positions", "split_folder", "split_image"]
