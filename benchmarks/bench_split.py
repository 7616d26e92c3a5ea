"""Training-data loading from 2K images, whole against cut by `esrforge split` (480 px, step 240).

A DIV2K-like set is made from scikit-image's photos (upscaled to 2040x1360 with a little noise, so
PNG compresses them as it does real photos); SRDataset then draws random 256 px crops, as
training does, from the whole images and from their sub-images. Run: python benchmarks/bench_split.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from esrforge.data.datasets import SRDataset
from esrforge.data.split import SplitSettings, split_folder
from esrforge.images import write_image


def make_set(root: Path, count: int) -> None:
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    for i in range(count):
        big = cv2.resize(photos[i % len(photos)], (2040, 1360), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        big += rng.normal(0, 3, big.shape)
        write_image(root / f"{i:04d}.png", np.clip(big, 0, 255).astype(np.uint8))


def rate(folder: Path, pipeline: str, samples: int, hr_size: int) -> float:
    ds = SRDataset(folder, scale=4, hr_size=hr_size, pipeline=pipeline, repeat=1000)
    ds[0]  # warm up
    t = time.perf_counter()
    for i in range(1, samples + 1):
        ds[i]
    return samples / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--hr-size", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(1)  # as in one DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        whole, subs = Path(tmp) / "whole", Path(tmp) / "subs"
        make_set(whole, args.images)
        t = time.perf_counter()
        n, errors = split_folder(whole, subs, SplitSettings(), workers=0)
        split_s = time.perf_counter() - t
        assert not errors
        print(f"{args.images} images of 2040x1360 PNG -> {n} sub-images of 480 px in {split_s:.1f} s (one process)")
        print("| pipeline | whole 2K images, crops/s | sub-images, crops/s | x |")
        print("|---|---|---|---|")
        for pipeline in ("bicubic", "realesrgan"):
            a, b = rate(whole, pipeline, args.samples, args.hr_size), rate(subs, pipeline, args.samples, args.hr_size)
            print(f"| {pipeline} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
