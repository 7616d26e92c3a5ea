"""CPU tile size and PNG encoding, side by side in one run: the time `esrforge upscale` spends on a
real photo at tile sizes 256 / 384 / 512 / whole, and writing its output as PNG with OpenCV's
default filter against Paeth.

Tiles overlap by a 16 px margin each side, so small tiles redo work: on a 1000x1400 image, 256 px
tiles cover 1.21x its area, 512 px tiles 1.12x.

Run: `.venv/bin/python benchmarks/bench_cpu_tile.py [--rrdb]` (needs scikit-image's sample photos).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from esrforge.archs import RRDBNet
from esrforge.images import read_image
from esrforge.infer import Upscaler
from esrforge.infer.device import tune_cpu_allocator
from esrforge.modelio import from_state_dict, load_model
from benchmarks.bench_upscale import init_like_basicsr


def retina(h: int, w: int) -> np.ndarray:
    import skimage

    img = read_image(Path(skimage.__file__).parent / "data" / "retina.jpg")
    return np.ascontiguousarray(img[:h, :w, :3])


def run(model, img: np.ndarray, tile: int | str, repeats: int) -> tuple[float, np.ndarray]:
    up = Upscaler([model], device="cpu", precision="fp32", tile=tile)
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = up.upscale(img)
        best = min(best, time.perf_counter() - t0)
    return best, out


def png_rows(out: np.ndarray) -> list[str]:
    bgr = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
    rows = []
    variants = {"OpenCV default (level 1, RLE)": []}
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):
        variants["level 1, RLE, Paeth filter"] = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                                                  cv2.IMWRITE_PNG_STRATEGY_RLE, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
    variants["level 6 (libpng's default)"] = [cv2.IMWRITE_PNG_COMPRESSION, 6]
    with tempfile.TemporaryDirectory() as tmp:
        for name, params in variants.items():
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                cv2.imwrite(os.path.join(tmp, "o.png"), bgr, params)
                best = min(best, time.perf_counter() - t0)
            size = os.path.getsize(os.path.join(tmp, "o.png"))
            assert np.array_equal(cv2.imread(os.path.join(tmp, "o.png")), bgr)
            rows.append(f"| {name} | {best:.2f} | {size / 1e6:.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rrdb", action="store_true", help="also RRDBNet x4 nf64 nb23 on a 384x384 crop (minutes)")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    tune_cpu_allocator()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), OpenCV {cv2.__version__}")
    cases = [("photo_x4 (bundled, compact nf48 nc16)", load_model("photo_x4"), retina(1000, 1400))]
    if a.rrdb:
        m = init_like_basicsr(RRDBNet(num_feat=64, num_block=23, num_grow_ch=32, scale=4))
        cases.append(("RRDBNet x4 nf64 nb23 (random)", from_state_dict(m.state_dict()), retina(384, 384)))
    print("| model | input | tile | s (best of %d) | x whole | max diff vs whole (levels) |" % a.repeats)
    print("|---|---|---|---|---|---|")
    last = None
    for name, model, img in cases:
        whole_s, whole = run(model, img, 0, a.repeats)
        for tile in (256, 384, 512):
            if tile >= max(img.shape[:2]):
                continue
            s, out = run(model, img, tile, a.repeats)
            diff = int(np.abs(out.astype(int) - whole.astype(int)).max())
            print(f"| {name} | {img.shape[1]}x{img.shape[0]} | {tile} | {s:.2f} | {s / whole_s:.2f} | {diff} |")
        print(f"| {name} | {img.shape[1]}x{img.shape[0]} | whole | {whole_s:.2f} | 1.00 | 0 |")
        last = last if last is not None else whole
    print()
    print(f"PNG of the photo_x4 output ({last.shape[1]}x{last.shape[0]} RGB), best of 3:")
    print("| encoder | s | MB |")
    print("|---|---|---|")
    print("\n".join(png_rows(last)))


if __name__ == "__main__":
    main()
