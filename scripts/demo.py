"""`make demo`: upscale a sample image. Until esrforge bundles a model, it needs MODEL=path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np


def sample_image(path: Path) -> Path:
    """A synthetic test card (gradients, edges, text), so the demo needs no download."""
    import cv2

    h, w = 192, 256
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 9.0) * np.cos(y / 13.0)], axis=2)
    img = (img * 255).astype(np.uint8)
    cv2.circle(img, (180, 90), 50, (250, 240, 30), 3, cv2.LINE_AA)
    cv2.rectangle(img, (20, 120), (110, 170), (20, 20, 20), -1)
    cv2.putText(img, "esrforge", (28, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img[:, :, ::-1])
    return path


def main() -> int:
    model = os.environ.get("MODEL", "").strip()
    if not model:
        print(
            "esrforge is installed in .venv.\n"
            "It does not bundle a default model yet, so the demo needs an ESRGAN-family model file\n"
            "(.pth or .safetensors: original ESRGAN, BasicSR, Real-ESRGAN, SRVGGNetCompact). Pass one:\n"
            "    make demo MODEL=path/to/RealESRGAN_x4plus.pth [IMAGE=path/to/photo.jpg]\n"
            "or call the command directly:\n"
            "    .venv/bin/esrforge upscale photo.jpg -o photo_x4.png -m path/to/model.pth"
        )
        return 0
    from esrforge.cli import main as cli

    image = os.environ.get("IMAGE", "").strip()
    src = Path(image) if image else sample_image(Path("demo-output/sample.png"))
    dst = Path("demo-output") / f"{src.stem}_up.png"
    rc = cli(["upscale", str(src), "-o", str(dst), "-m", model, "--overwrite"])
    if rc == 0:
        print(f"wrote {dst}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
