"""Upscaling speed: esrforge's paths against the naive reference and the machine's matmul ceiling.

Run: `make bench` (or `.venv/bin/python benchmarks/bench_upscale.py [--size 256] [--device cpu]`).
All figures come from one run, side by side, so ratios are comparable. Weights are random with
BasicSR's initialisation (kaiming x 0.1), which has the published models' shapes and cost.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from esrforge.archs import RRDBNet, SRVGGNetCompact
from esrforge.images import read_image
from esrforge.infer import Upscaler
from esrforge.infer.device import cpu_has_fast_bf16, resolve_device, tune_cpu_allocator
from esrforge.modelio import from_state_dict


def photo(size: int) -> tuple[np.ndarray, str]:
    """A centre crop of scikit-image's astronaut photo (ships inside the PyPI package)."""
    import skimage

    path = Path(skimage.__file__).parent / "data" / "astronaut.png"
    img = read_image(path)
    h, w = img.shape[:2]
    t, l = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[t : t + size, l : l + size, :3]), f"{path.name} centre {size}x{size}"


def init_like_basicsr(m: nn.Module) -> nn.Module:
    """BasicSR's initialisation (kaiming x 0.1), plus an identity path through the trunk.

    Plain random weights make an RRDBNet output ~0, which clamps to black and hides precision
    errors. Routing the image through three feature channels of every non-body conv (dirac
    weights) gives image-like outputs with every conv still doing its full, random work.
    """
    torch.manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight)
            mod.weight.data *= 0.1
            nn.init.zeros_(mod.bias)
    if isinstance(m, RRDBNet):
        with torch.no_grad():
            for name in ["conv_first", *(f"conv_up{i}" for i in range(1, m.num_upsample + 1)), "conv_hr", "conv_last"]:
                w = getattr(m, name).weight
                for c in range(3):
                    w[c, c, 1, 1] += 1.0
    return m.eval().requires_grad_(False)


def conv_flops(m: nn.Module, shape: tuple[int, ...]) -> float:
    """Multiply-adds x 2 of every conv for one forward pass at `shape`."""
    total = 0.0

    def hook(mod, inp, out):
        nonlocal total
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += 2.0 * out.numel() * (mod.in_channels // mod.groups) * k

    hs = [c.register_forward_hook(hook) for c in m.modules() if isinstance(c, nn.Conv2d)]
    with torch.inference_mode():
        m(torch.zeros(shape))
    for h in hs:
        h.remove()
    return total


def matmul_ceiling(dtype: torch.dtype, device: torch.device, reps: int = 5) -> float:
    """Best GFLOP/s of square matmuls of a few sizes: what the machine's BLAS reaches."""
    best = 0.0
    for n in (1024, 2048, 4096):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        for _ in range(3):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            _sync(device)
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up: kernel selection, weight packing
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def naive(module: nn.Module, img: np.ndarray, device: torch.device) -> np.ndarray:
    """The reference everyone starts from: whole image, fp32, NCHW, plain model(x)."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)
    with torch.no_grad():
        y = module(x)
    _sync(device)
    return (y[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def build_models() -> dict[str, nn.Module]:
    return {
        name: init_like_basicsr(m)
        for name, m in {
            "RRDBNet x4 (nf64 nb23 gc32)": RRDBNet(num_feat=64, num_block=23, num_grow_ch=32, scale=4),
            "compact x4 (nf64 nc32 prelu)": SRVGGNetCompact(num_feat=64, num_conv=32, scale=4),
        }.items()
    }


def naive_in_fresh_process(index: int, args: argparse.Namespace) -> tuple[float, np.ndarray]:
    """The naive reference run as a plain script would: its own process, malloc untouched.

    In-process, the compact model's naive time after RRDBNet's took 2.45 s in one run and 1.55 s
    in the next (2.13-2.58 s in fresh processes), and esrforge's allocator setting, which is
    process-wide and one-way, must not reach it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.npy"
        cmd = [sys.executable, __file__, "--size", str(args.size), "--device", args.device, "--repeats", str(args.repeats),
               "--naive-only", str(index), "--naive-out", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"naive reference failed:\n{r.stderr}")
        return float(r.stdout.split()[-1]), np.load(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256, help="input crop size (LR pixels)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--naive-only", type=int, default=None, help=argparse.SUPPRESS)  # the subprocess's job
    ap.add_argument("--naive-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = resolve_device(args.device)
    img, what = photo(args.size)
    mp_out = img.shape[0] * img.shape[1] * 16 / 1e6
    if args.naive_only is not None:
        m = list(build_models().values())[args.naive_only].to(device)
        t, out = timed(lambda: naive(m, img, device), args.repeats)
        np.save(args.naive_out, out)
        print(t)
        return

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"image: {what}, output {mp_out:.2f} MP")
    ceil32 = matmul_ceiling(torch.float32, device)
    half, hname = (torch.float16, "fp16") if device.type == "cuda" else (torch.bfloat16, "bf16")
    with_half = device.type != "cpu" or cpu_has_fast_bf16()
    ceil16 = matmul_ceiling(half, device) if with_half else math.nan
    print(f"matmul ceiling: fp32 {ceil32:.0f} GFLOP/s" + (f", {hname} {ceil16:.0f} GFLOP/s\n" if with_half else "\n"))
    if not with_half:  # oneDNN's generic bf16 kernels are many times slower than fp32 there
        print("(no bf16 rows: this CPU has no bf16 units, and --precision auto runs fp32 on it)\n")

    models = build_models()
    refs = {name: naive_in_fresh_process(i, args) for i, name in enumerate(models)}
    tuned = device.type == "cpu" and tune_cpu_allocator()  # as `esrforge upscale` does on CPU
    print("| model | path | s | MP/s (output) | x naive | GFLOP/s | % of ceiling | PSNR vs fp32 (dB) | max diff vs naive |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in models.items():
        flops = conv_flops(m.cpu(), (1, 3, *img.shape[:2]))
        t_ref, ref = refs[name]
        rows = [("naive: whole, fp32, NCHW", t_ref, ref, torch.float32)]
        if tuned:  # how much of the gain is the allocator alone
            t, out = timed(lambda m=m: naive(m.to(device), img, device), args.repeats)
            rows.append(("naive, esrforge's allocator setting", t, out, torch.float32))
        lm = from_state_dict(m.cpu().state_dict())
        fp32_out = None
        for label, prec, tile in (
            ("esrforge fp32, whole image", "fp32", 0),
            ("esrforge fp32, default tile", "fp32", "auto"),
            *(((f"esrforge {hname}, whole image", hname, 0), (f"esrforge {hname}, default tile", hname, "auto")) if with_half else ()),
        ):
            up = Upscaler(lm, device=device, precision=prec, tile=tile)
            t, out = timed(lambda: up.upscale(img), args.repeats)
            if prec == "fp32" and tile == 0:
                fp32_out = out
            rows.append((label, t, out, torch.float32 if prec == "fp32" else half))
        for label, t, out, dt in rows:
            ceil = ceil32 if dt == torch.float32 else ceil16
            gf = flops / t / 1e9
            print(f"| {name} | {label} | {t:.2f} | {mp_out / t:.3f} | {t_ref / t:.2f} | {gf:.0f} | {100 * gf / ceil:.0f}% "
                  f"| {psnr(out, fp32_out):.1f} | {np.abs(out.astype(int) - ref).max()} |")
    print("\nmax diff is in 8-bit levels; PSNR vs fp32 compares with esrforge's fp32 whole-image output.")


if __name__ == "__main__":
    main()
