"""Training-data throughput: pairs/s of the `realesrgan` pipeline at hr_size 256, next to the
iteration rate of a compact model's training step, measured in one run on this machine.

Run: `.venv/bin/python benchmarks/bench_data.py [--workers 0 2] [--device cpu]`
(needs scikit-image for its sample photos: `pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from esrforge.archs import SRVGGNetCompact
from esrforge.data.datasets import SRDataset
from esrforge.data.pipeline import load_pipeline
from esrforge.images import read_image, write_image
from esrforge.infer.device import resolve_device

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "retina.jpg")


def make_hr_folder(root: Path) -> int:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    for name in PHOTOS:
        write_image(root / f"{Path(name).stem}.png", read_image(data / name)[:, :, :3])
    return len(PHOTOS)


def data_rate(ds: SRDataset, workers: int, batch: int, batches: int) -> float:
    # Few photos, many crops: sample indices with replacement, as an epoch of a big set would.
    sampler = RandomSampler(ds, replacement=True, num_samples=batch * (batches + 1), generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)  # start-up: worker processes, first reads
    t0 = time.perf_counter()
    n = sum(next(it)["lr"].shape[0] for _ in range(batches))
    return n / (time.perf_counter() - t0)


def train_rate(device: torch.device, batch: int, lr_size: int, steps: int) -> float:
    """Iterations/s of a full compact x4 step: forward, L1 loss, backward, Adam, in bf16/fp16 AMP."""
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=64, num_conv=32, scale=4).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    lr = torch.rand(batch, 3, lr_size, lr_size, device=device).contiguous(memory_format=torch.channels_last)
    hr = torch.rand(batch, 3, lr_size * 4, lr_size * 4, device=device)
    amp = torch.float16 if device.type == "cuda" else torch.bfloat16

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp):
            loss = (net(lr).float() - hr).abs().mean()
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, device {device}")
    with tempfile.TemporaryDirectory() as tmp:
        n = make_hr_folder(Path(tmp))
        ds = SRDataset([tmp], pipeline=load_pipeline("realesrgan"), scale=4, hr_size=256, seed=0)
        print(f"data: {n} scikit-image photos, HR-only, realesrgan preset, hr_size 256, x4, batch {args.batch}\n")
        print("| what | rate |\n|---|---|")
        for w in args.workers:
            print(f"| realesrgan pairs/s, {w} DataLoader worker(s) | {data_rate(ds, w, args.batch, args.batches):.1f} |")
    its = train_rate(device, args.batch, 64, 3)
    print(f"| compact x4 (nf64 nc32) training step, batch {args.batch}, LR 64x64, AMP, it/s | {its:.2f} |")
    print(f"| = pairs/s the training step consumes | {its * args.batch:.1f} |")


if __name__ == "__main__":
    main()
