"""Iterations/s of the ESRGAN GAN-stage training step (RRDBNet generator, VGG-style
discriminator, relativistic GAN + VGG19 conv5_4 perceptual + L1) in fp32/NCHW against
bf16 + channels_last (and fp16 on CUDA when present), measured side by side in one run.

Run: `.venv/bin/python benchmarks/bench_train.py [--num-block 23] [--batch 2] [--hr-size 64]`
Weights are random (no downloads here): the cost of a step does not depend on their values.
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

from esrforge.images import write_image
from esrforge.infer.device import ALLOCATOR_ENV, cpu_has_fast_bf16
from esrforge.losses.perceptual import vgg19_layers
from esrforge.train.config import load_config
from esrforge.train.loop import setup, train_step


def make_workspace(root: Path, hr_size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        write_image(root / "hr" / f"{i}.png", (rng.random((hr_size * 2, hr_size * 2, 3)) * 255).astype(np.uint8))
    seq, _ = vgg19_layers()
    vgg = {}
    for i, m in enumerate(seq):
        if isinstance(m, torch.nn.Conv2d):
            vgg[f"features.{i}.weight"] = torch.randn(m.weight.shape) * 0.02
            vgg[f"features.{i}.bias"] = torch.zeros(m.out_channels)
    torch.save(vgg, root / "vgg19.pth")


def rate(cfg_dict: dict, steps: int, run_dir: Path) -> float:
    run = setup(load_config(cfg_dict), run_dir, log=lambda m: None)
    bs, hs, s = cfg_dict["data"]["train"]["batch_size"], cfg_dict["data"]["train"]["hr_size"], cfg_dict["scale"]
    g = torch.Generator().manual_seed(0)
    batch = {"lr": torch.rand(bs, 3, hs // s, hs // s, generator=g), "hr": torch.rand(bs, 3, hs, hs, generator=g)}
    train_step(run, [batch])  # warm-up: kernel selection, allocator
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(run, [batch])
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--num-feat", type=int, default=64)
    ap.add_argument("--num-block", type=int, default=23)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--hr-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_workspace(root, args.hr_size)
        base = {
            "name": "run", "scale": 4, "device": "auto",
            "data": {"train": {"hr": [str(root / "hr")], "hr_size": args.hr_size, "batch_size": args.batch, "workers": 0,
                               "repeat": -(-args.batch // 4)}},  # 4 images on disk; batches are made here anyway
            "generator": {"arch": "rrdbnet", "num_feat": args.num_feat, "num_block": args.num_block, "num_grow_ch": 32},
            "discriminator": {"arch": "vgg", "num_feat": 64},
            "losses": {"pixel": {"type": "l1", "weight": 0.01},
                       "perceptual": {"layers": {"conv5_4": 1.0}, "vgg_weights": str(root / "vgg19.pth")},
                       "gan": {"type": "vanilla", "relativistic": True, "weight": 0.005}},
        }
        cuda = torch.cuda.is_available()
        print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
              f"{'CUDA ' + torch.cuda.get_device_name() if cuda else 'CPU only'}")
        print(f"step: RRDBNet nf{args.num_feat} nb{args.num_block} x4 + VGG-style D + VGG19 conv5_4, batch {args.batch}, "
              f"HR {args.hr_size}px\n")
        # The reference is the plain fp32/NCHW step with malloc as a plain PyTorch process has
        # it; esrforge's training setup tunes the allocator on CPU (process-wide, one-way), so
        # the reference runs first, with that opted out.
        paths = [("fp32, NCHW (reference)" if cuda else "fp32, NCHW, plain malloc (reference)", "fp32", False)]
        if not cuda:
            paths.append(("fp32, NCHW", "fp32", False))
        if cuda or cpu_has_fast_bf16():
            paths.append(("bf16 autocast, channels_last", "bf16", True))
        else:  # oneDNN's generic bf16 kernels are many times slower than fp32: nothing to learn
            print("(no bf16 row: this CPU has no bf16 units; channels_last in fp32 instead)\n")
            paths.append(("fp32, channels_last", "fp32", True))
        if cuda:
            paths.append(("fp16 autocast + grad scaler, channels_last", "fp16", True))
        print("| path | it/s | x reference |\n|---|---|---|")
        ref = None
        for label, prec, cl in paths:
            cfg = dict(base, precision=prec, train={"channels_last": cl, "ema": 0.999})
            if ref is None:
                os.environ[ALLOCATOR_ENV] = "system"
            r = rate(cfg, args.steps, root / "run")
            os.environ.pop(ALLOCATOR_ENV, None)
            ref = ref or r
            print(f"| {label} | {r:.3f} | {r / ref:.2f} |")


if __name__ == "__main__":
    main()
