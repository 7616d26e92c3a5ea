"""Many short epochs: the training loop's one long-lived DataLoader against a DataLoader made
anew each epoch (esrforge before 2026-12-01, and what most training scripts do), in one run.

A small fine-tuning set (a few dozen images) makes an epoch a handful of iterations, so worker
start-up and the drain at each epoch's end repeat often. `spawn` is how workers start on
Windows and macOS (and `forkserver`, Python 3.14's Linux default, also imports in the worker).

Run: `.venv/bin/python benchmarks/bench_epochs.py [--images 20] [--batches 60] [--workers 2]`
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader

from esrforge.data.datasets import SRDataset, seed_for
from esrforge.images import write_image
from esrforge.train.loop import batches


def per_epoch_loaders(ds: SRDataset, batch: int, workers: int, seed: int):
    """The old way: a new DataLoader, with new worker processes, for every epoch."""
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed_for(seed, "order", epoch))).tolist()
        yield from DataLoader(ds, batch_size=batch, sampler=order, num_workers=workers, drop_last=True)
        epoch += 1


def one_loader(ds: SRDataset, batch: int, workers: int, seed: int):
    cfg = SimpleNamespace(seed=seed, data=SimpleNamespace(train=SimpleNamespace(batch_size=batch, workers=workers)))
    run = SimpleNamespace(cfg=cfg, world=1, rank=0, dataset=ds, epoch=0, batches_done=0, device=torch.device("cpu"))
    return batches(run)


def seconds(make, n: int) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    data = make()
    hr = [next(data)["hr"] for _ in range(n)]
    elapsed = time.perf_counter() - t0
    del data  # shuts its workers down
    return elapsed, torch.cat(hr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread, torch {torch.__version__}, "
          f"{a.images} HR images 256x256, hr_size 128 x4 bicubic, batch {a.batch_size} ({a.images // a.batch_size} batches an epoch), "
          f"{a.batches} batches, {a.workers} workers")
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for i in range(a.images):
            write_image(Path(tmp) / f"{i}.png", rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        ds = SRDataset(tmp, scale=4, hr_size=128, pipeline="bicubic")
        print("| worker start | DataLoader per epoch, s | one DataLoader, s | x |")
        print("|---|---|---|---|")
        for method in ("fork", "spawn"):
            multiprocessing.set_start_method(method, force=True)
            old, a_hr = seconds(lambda: per_epoch_loaders(ds, a.batch_size, a.workers, 0), a.batches)
            new, b_hr = seconds(lambda: one_loader(ds, a.batch_size, a.workers, 0), a.batches)
            assert torch.equal(a_hr, b_hr), "the two ways must give the same batches"
            print(f"| {method} | {old:.2f} | {new:.2f} | {old / new:.1f} |")


if __name__ == "__main__":
    main()
