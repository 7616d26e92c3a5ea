"""One Adam step over RRDBNet x4's parameters: PyTorch's default, foreach and fused, side by side.

Run: `.venv/bin/python benchmarks/bench_optim.py [--rounds 2] [--device cpu]`. The training loop
builds fused Adam/AdamW on CPU and CUDA; this shows why. Gradients are random (the cost of a
step does not depend on their values); also prints how far the fused result is from the default.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from esrforge.archs import RRDBNet
from esrforge.infer.device import resolve_device

MODES = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_ms(mode: str, device: torch.device, steps: int = 5) -> float:
    m = RRDBNet(num_feat=64, num_block=23, num_grow_ch=32, scale=4).to(device)
    for p in m.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt = torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.99), **MODES[mode])
    opt.step()
    opt.step()  # warm-up: state allocated
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1000


def max_difference(device: torch.device) -> float:
    """Largest parameter difference between fused and default Adam after three steps."""
    outs = {}
    for mode in ("default", "fused"):
        torch.manual_seed(0)
        m = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=4).to(device)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.9, 0.99), **MODES[mode])
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=g).to(device)
            opt.step()
        outs[mode] = torch.cat([p.detach().flatten() for p in m.parameters()])
    return float((outs["fused"] - outs["default"]).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}\n")
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):  # alternating, so drift on a shared machine hits every mode
        for mode in MODES:
            times[mode].append(step_ms(mode, device))
    print("| Adam | ms per step (each round) | x default (best) |\n|---|---|---|")
    base = min(times["default"])
    for mode, ts in times.items():
        print(f"| {mode} | {' / '.join(f'{t:.1f}' for t in ts)} | {base / min(ts):.2f} |")
    print(f"\nfused vs default after three steps: max parameter difference {max_difference(device):.1e}")


if __name__ == "__main__":
    main()
