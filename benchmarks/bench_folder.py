"""Folder upscaling: `esrforge upscale`'s loop (the next image read and the last result written
while the model runs) against the plain serial loop (read, upscale, write, next), side by side
in one run, alternating, with the bundled default model.

Run: `.venv/bin/python benchmarks/bench_folder.py [--device cuda] [--images 8] [--size 384]`
(needs scikit-image for its sample photos: `pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from esrforge.cli import Job, upscale_jobs
from esrforge.images import read_image, write_image
from esrforge.infer import Upscaler
from esrforge.modelio import DEFAULT_MODEL, load_model

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg")


def make_inputs(root: Path, count: int, size: int) -> list[Path]:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    paths = []
    for i in range(count):
        img = read_image(data / PHOTOS[i % len(PHOTOS)])[:, :, :3]
        h, w = img.shape[:2]
        y, x = (h - min(h, size)) // 2, (w - min(w, size)) // 2
        paths.append(root / f"{i:03d}.png")
        write_image(paths[-1], np.ascontiguousarray(img[y : y + size, x : x + size]))
    return paths


def serial(jobs: list[Job], up: Upscaler) -> None:
    for job in jobs:
        write_image(job.dst, up.upscale(read_image(job.src)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=384, help="input crop size (px)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    up = Upscaler(load_model(DEFAULT_MODEL), device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = make_inputs(root / "in", args.images, args.size)
        h, w = read_image(inputs[0]).shape[:2]
        print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, device {up.device}"
              + (f" ({torch.cuda.get_device_name(up.device)})" if up.device.type == "cuda" else ""))
        print(f"{args.images} PNG photos of about {w}x{h} -> x4 PNG, bundled default model, precision auto\n")
        up.upscale(read_image(inputs[0]))  # warm-up: weights on the device, kernels chosen
        times: dict[str, list[float]] = {"serial loop": [], "esrforge upscale loop": []}
        for r in range(args.rounds):
            for label in times:
                jobs = [Job(p, root / f"out_{r}_{label[:3]}" / p.name) for p in inputs]
                t0 = time.perf_counter()
                if label == "serial loop":
                    serial(jobs, up)
                else:
                    done, failed = upscale_jobs(jobs, up, quiet=True)
                    assert (done, failed) == (len(jobs), 0)
                times[label].append(time.perf_counter() - t0)
        ref = min(times["serial loop"])
        print("| loop | s (best of {}) | images/s | x serial |\n|---|---|---|---|".format(args.rounds))
        for label, ts in times.items():
            print(f"| {label} | {min(ts):.2f} | {args.images / min(ts):.2f} | {ref / min(ts):.2f} |")
        one = read_image(inputs[0])
        t0 = time.perf_counter()
        out = up.upscale(one)
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_image(root / "one.png", out)
        t_w = time.perf_counter() - t0
        print(f"\none image: upscale {t_up:.3f} s, PNG write {t_w:.3f} s")


if __name__ == "__main__":
    main()
