"""The before/after pictures and the interpolation strip in docs/models.md, made with esrforge's
own commands (`esrforge upscale`, `esrforge interpolate`) on the held-out photos.

    python scripts/model_pictures.py [--out docs/images]

Writes OUT/compare_<photo>.png (input | bicubic | photo_x4 | photo_x4_gan | HR, on a detailed
crop) and OUT/interpolation.png (photo_x4 -> photo_x4_gan at alpha 0, 0.25, 0.5, 0.75, 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

CROP = 160  # HR pixels
PHOTOS = ("coffee", "china", "chelsea")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def esrforge(*args: str) -> None:
    from esrforge.cli import main

    if main([*args]) != 0:
        sys.exit(f"esrforge {' '.join(args)} failed")


def busiest_window(hr: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner (on a 4-pixel grid) of the size x size window with the most fine detail."""
    g = cv2.cvtColor(hr, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = np.abs(cv2.Laplacian(g, cv2.CV_32F))
    integral = cv2.integral(energy)
    best, at = -1.0, (0, 0)
    for y in range(0, hr.shape[0] - size + 1, 8):
        for x in range(0, hr.shape[1] - size + 1, 8):
            s = integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x]
            if s > best:
                best, at = s, (y, x)
    return at


def panel(img: np.ndarray, caption: str) -> np.ndarray:
    """An image with a caption bar above it (RGB)."""
    bar = np.full((26, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def row(panels: list[np.ndarray]) -> np.ndarray:
    gap = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [gap, p]
    return np.concatenate(out, axis=1)


def main() -> int:
    from esrforge.images import read_image, write_image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "build" / "model-data")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "pictures")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = ap.parse_args()
    held = args.data / "heldout"
    if not (held / "lr").is_dir():
        import model_data

        model_data.prepare(args.data)
    w = args.work
    lr_dir = held / "lr"
    esrforge("upscale", str(lr_dir), "-o", str(w / "photo_x4"), "-m", "photo_x4", "--overwrite", "-q")
    esrforge("upscale", str(lr_dir), "-o", str(w / "photo_x4_gan"), "-m", "photo_x4_gan", "--overwrite", "-q")
    for a in ALPHAS[1:-1]:
        esrforge("interpolate", "photo_x4", "photo_x4_gan", "--alpha", str(a), "-o", str(w / f"interp_{a}.safetensors"))
        esrforge("upscale", str(lr_dir / f"{PHOTOS[0]}.png"), "-o", str(w / f"interp_{a}" / f"{PHOTOS[0]}.png"),
                 "-m", str(w / f"interp_{a}.safetensors"), "--overwrite", "-q")

    def crop(img: np.ndarray, y: int, x: int) -> np.ndarray:
        return np.ascontiguousarray(img[y : y + CROP, x : x + CROP])

    windows = {}
    for name in PHOTOS:
        hr = read_image(held / "hr" / f"{name}.png")
        lr = read_image(lr_dir / f"{name}.png")
        y, x = windows[name] = busiest_window(hr, CROP)
        nearest = cv2.resize(lr, (lr.shape[1] * 4, lr.shape[0] * 4), interpolation=cv2.INTER_NEAREST)
        bicubic = cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC)
        shots = [
            (nearest, "input (x4 nearest)"),
            (bicubic, "bicubic"),
            (read_image(w / "photo_x4" / f"{name}.png"), "photo_x4"),
            (read_image(w / "photo_x4_gan" / f"{name}.png"), "photo_x4_gan"),
            (hr, "original (HR)"),
        ]
        write_image(args.out / f"compare_{name}.png", row([panel(crop(im, y, x), cap) for im, cap in shots]))
    name = PHOTOS[0]
    y, x = windows[name]
    strip = []
    for a in ALPHAS:
        src = w / ("photo_x4" if a == 0 else "photo_x4_gan" if a == 1 else f"interp_{a}") / f"{name}.png"
        strip.append(panel(crop(read_image(src), y, x), f"alpha {a:g}"))
    write_image(args.out / "interpolation.png", row(strip))
    print(f"wrote {args.out}/compare_*.png and {args.out}/interpolation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
