"""`make demo`: upscale a sample photo x4 with esrforge's bundled default model.

MODEL=path/or/name picks another model, IMAGE=path another picture.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

OUT = Path("demo-output")


def sample_image(path: Path) -> Path:
    """A small sample photo: scikit-image's coffee (held out from the bundled models' training),
    reduced x4 so the upscale can be compared with the original. Without scikit-image, a
    synthetic test card."""
    from esrforge.images import write_image

    try:
        import skimage

        from esrforge.data.degrade import degrade_image
        from esrforge.data.pipeline import load_pipeline
        from esrforge.images import read_image

        hr = read_image(Path(skimage.__file__).parent / "data" / "coffee.png")
        img, _ = degrade_image(hr, load_pipeline("bicubic"), 4, seed=0)
    except ImportError:
        import cv2

        h, w = 96, 128
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 5.0) * np.cos(y / 7.0)], axis=2)
        img = np.ascontiguousarray((img * 255).astype(np.uint8))
        cv2.circle(img, (90, 45), 25, (250, 240, 30), 2, cv2.LINE_AA)
        cv2.putText(img, "esr", (10, 80), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    write_image(path, img)
    return path


def main() -> int:
    from esrforge.cli import main as cli
    from esrforge.modelio import DEFAULT_MODEL

    model = os.environ.get("MODEL", "").strip() or DEFAULT_MODEL
    image = os.environ.get("IMAGE", "").strip()
    src = Path(image) if image else sample_image(OUT / "sample.png")
    dst = OUT / f"{src.stem}_x4.png"
    rc = cli(["upscale", str(src), "-o", str(dst), "-m", model, "--overwrite"])
    if rc == 0:
        print(f"upscaled {src} with {model} -> {dst}\n(other bundled models: .venv/bin/esrforge models)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
