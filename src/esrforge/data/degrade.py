"""`esrforge degrade`: write an LR dataset from HR images, or a contact sheet of random draws."""

from __future__ import annotations

import concurrent.futures as cf
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

from esrforge.data.datasets import DatasetError, scan_images, seed_for
from esrforge.data.pipeline import Pipeline
from esrforge.fileio import file_error_text
from esrforge.images import IMAGE_SUFFIXES, read_image_and_metadata, visible_files, write_image
from esrforge.infer.tiling import Progress


def degrade_image(img: np.ndarray, pipeline: Pipeline, scale: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """One HR image (H x W x C, uint8/uint16/float32) -> LR image of the same dtype, and the labels.

    Alpha is not degraded (blur, noise or JPEG on a mask mean nothing): it is resized to the LR
    size with MATLAB bicubic.
    """
    g = torch.Generator().manual_seed(seed)
    h, w, c = img.shape
    if h < scale or w < scale:
        raise ValueError(f"HR size {w}x{h} is smaller than the scale {scale}")
    h, w = h - h % scale, w - w % scale  # BasicSR's mod-crop: LR is exactly HR / scale
    maxval = float(np.iinfo(img.dtype).max) if img.dtype.kind == "u" else 1.0
    x = torch.from_numpy(np.ascontiguousarray(img[:h, :w])).permute(2, 0, 1).float().div_(maxval)  # own channels, alpha last
    lr, labels = pipeline.keeping_alpha(x.unsqueeze(0), g, scale)
    y = lr[0].permute(1, 2, 0)
    if img.dtype.kind == "u":
        y = (y * maxval).round()
    return np.ascontiguousarray(y.numpy().astype(img.dtype)), labels[0]


def _work(args: tuple[Path, Path, Pipeline, int, int]) -> str:
    src, dst, pipeline, scale, seed = args
    hr, meta = read_image_and_metadata(src)
    lr, _ = degrade_image(hr, pipeline, scale, seed)
    write_image(dst, lr, metadata=meta.colour_only())  # the LR's numbers are in the HR's colour space
    return str(dst)


def _init_worker() -> None:
    torch.set_num_threads(1)  # workers x threads should not exceed the cores


J = TypeVar("J", bound=tuple)
R = TypeVar("R")


def run_file_jobs(
    fn: Callable[[J], R], jobs: Sequence[J], *, workers: int, initializer: Callable[[], None] | None = None
) -> Iterator[tuple[J, R | None, BaseException | None]]:
    """fn(job) for each job (job[0] its source file), in this process (workers <= 0) or in that
    many processes; yields (job, result, error) as each ends: one damaged file must not stop
    the rest."""
    if workers <= 0:
        for job in jobs:
            try:
                result = fn(job)
            except Exception as e:
                yield job, None, e
                continue
            yield job, result, None
        return
    with cf.ProcessPoolExecutor(max_workers=workers, initializer=initializer) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        for fut in cf.as_completed(futures):
            exc = fut.exception()
            yield futures[fut], (fut.result() if exc is None else None), exc


def degrade_folder(
    hr_dir: Path,
    lr_dir: Path,
    *,
    scale: int,
    pipeline: Pipeline,
    seed: int = 0,
    workers: int = 0,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> tuple[list[str], int]:
    """Degrade every image under hr_dir into lr_dir (same relative names, PNG). LR files already
    there are kept (they may be hand-made or another run's) unless `overwrite`.

    Each file's randomness comes from (seed, relative path) alone, so the result does not depend
    on the number of workers or the order files are done in. `progress` (a tqdm bar, say) gets
    its total and one update per file. Returns per-file error messages and the number skipped.
    """
    if lr_dir.resolve() == hr_dir.resolve() or hr_dir.resolve() in lr_dir.resolve().parents:
        raise DatasetError(f"{lr_dir}: the LR folder must not be the HR folder or inside it")
    images = scan_images([hr_dir])
    if not images:
        raise DatasetError(f"{hr_dir}: no images found")
    every = [(src, lr_dir / f"{key}.png", pipeline, scale, seed_for(seed, key)) for key, src in images.items()]
    jobs = every if overwrite else [job for job in every if not job[1].exists()]
    if progress is not None:
        progress.total = len(jobs)
    errors: list[str] = []
    for job, _, exc in run_file_jobs(_work, jobs, workers=workers, initializer=_init_worker):
        if exc is not None:
            errors.append(file_error_text(job[0], exc))
        if progress is not None:
            progress.update(1)
    _warn_stale(lr_dir, {job[1] for job in every})
    return errors, len(every) - len(jobs)


def _warn_stale(lr_dir: Path, written: set[Path]) -> None:
    """LR files this run did not write (an earlier run's, for HR images since removed, or from
    another seed or pipeline) would sit in the dataset unnoticed: name them."""
    if not lr_dir.is_dir():
        return  # nothing was written (every image failed): nothing stale either
    stale = sorted(p for p in visible_files(lr_dir) if p.suffix.lower() in IMAGE_SUFFIXES and p not in written)
    if stale:
        shown = ", ".join(map(str, stale[:5])) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        warnings.warn(f"{lr_dir}: {len(stale)} LR file(s) were not written by this run (an earlier run's?): {shown}", stacklevel=3)


def _wrap(text: str, width_px: int, scale: float = 0.4) -> list[str]:
    """Split a label into lines that fit `width_px` in OpenCV's simplex font."""
    lines, cur = [], ""
    for word in text.split(" "):
        trial = f"{cur} {word}".strip()
        (tw, _), _ = cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        if tw > width_px and cur:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    return lines + ([cur] if cur else [])


def preview_sheet(img: np.ndarray, pipeline: Pipeline, *, scale: int, count: int = 8, seed: int = 0, columns: int = 4) -> np.ndarray:
    """A contact sheet: the HR image, then `count` random LR draws shown at HR size (nearest
    neighbour, so every artifact stays visible), each captioned with the steps that fired."""
    # The draws are made on the image's own colour channels (gray stays gray, as in a real run),
    # shown as 8-bit RGB.
    src = img[:, :, :3] if img.shape[2] >= 3 else img[:, :, :1]
    if src.dtype != np.uint8:
        maxval = float(np.iinfo(src.dtype).max) if src.dtype.kind == "u" else 1.0
        src = (np.clip(src.astype(np.float32) / maxval, 0, 1) * 255).round().astype(np.uint8)
    if min(src.shape[:2]) < scale:
        raise ValueError(f"HR size {src.shape[1]}x{src.shape[0]} is smaller than the scale {scale}")
    h, w = src.shape[0] - src.shape[0] % scale, src.shape[1] - src.shape[1] % scale
    src = src[:h, :w]

    def as_rgb(a: np.ndarray) -> np.ndarray:
        return np.repeat(a.reshape(a.shape[0], a.shape[1], -1), 3, axis=2) if a.ndim == 2 or a.shape[2] == 1 else a

    tiles = [(as_rgb(src), ["HR (input)"])]
    for i in range(count):
        lr, labels = degrade_image(src, pipeline, scale, seed_for(seed, "preview", i))
        shown = as_rgb(cv2.resize(lr, (w, h), interpolation=cv2.INTER_NEAREST))
        tiles.append((shown, [f"#{i + 1}: " + ("; ".join(labels) if labels else "(no step fired)")]))
    line_h, pad = 14, 4
    captions = [sum((_wrap(t, w - 2 * pad) for t in text), []) for _, text in tiles]
    cap_h = line_h * max(len(c) for c in captions) + 2 * pad
    rows = (len(tiles) + columns - 1) // columns
    cols = min(columns, len(tiles))
    sheet = np.full((rows * (h + cap_h), cols * w, 3), 255, np.uint8)
    for i, ((tile, _), cap) in enumerate(zip(tiles, captions)):
        y, x = (i // columns) * (h + cap_h), (i % columns) * w
        sheet[y : y + h, x : x + w] = tile
        for j, line in enumerate(cap):
            cv2.putText(sheet, line, (x + pad, y + h + pad + line_h * (j + 1) - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)
