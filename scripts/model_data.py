"""Training and held-out photos for the bundled models, taken from files that ship inside PyPI packages.

    python scripts/model_data.py [--out build/model-data]

writes
    OUT/train/*.png        HR training images (scikit-image sample photos and textures)
    OUT/heldout/hr/*.png   held-out photos, cropped to a multiple of 4 (never used for training)
    OUT/heldout/lr/*.png   the same photos downscaled x4 with MATLAB-style antialiased bicubic

The held-out set is what `benchmarks/bench_models.py` measures and what training validates on.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

# scikit-image photos, grayscale textures and documents; grayscale ones are stored as RGB so that
# the model sees luminance-only structure too. motorcycle_left/right are a stereo pair: both train.
TRAIN_SKIMAGE = (
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "moon.png",
    "coins.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "page.png",
    "text.png",
)
# Held out: two scikit-image photos and scikit-learn's two sample photos.
HELDOUT_SKIMAGE = ("coffee.png", "chelsea.png")
HELDOUT_SKLEARN = ("china.jpg", "flower.jpg")
SCALE = 4


def _skimage_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _sklearn_dir() -> Path:
    try:
        import sklearn
    except ImportError:
        sys.exit("scikit-learn is needed for the held-out photos: pip install -e '.[models]'")
    return Path(sklearn.__file__).parent / "datasets" / "images"


def _read_rgb(path: Path) -> np.ndarray:
    from esrforge.images import read_image

    img = read_image(path)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3]


def cpu_name() -> str:
    """The CPU model, for the records of where a model was trained or measured."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def prepare(out: Path) -> None:
    from esrforge.data.degrade import degrade_image
    from esrforge.data.pipeline import load_pipeline
    from esrforge.images import write_image

    ski, skl = _skimage_dir(), _sklearn_dir()
    for name in TRAIN_SKIMAGE:
        write_image(out / "train" / f"{Path(name).stem}.png", _read_rgb(ski / name))
    held = [ski / n for n in HELDOUT_SKIMAGE] + [skl / n for n in HELDOUT_SKLEARN]
    bicubic = load_pipeline("bicubic")  # MATLAB's antialiased imresize(hr, 1/4): the benchmark LR
    for path in held:
        hr = _read_rgb(path)
        hr = np.ascontiguousarray(hr[: hr.shape[0] // SCALE * SCALE, : hr.shape[1] // SCALE * SCALE])
        write_image(out / "heldout" / "hr" / f"{path.stem}.png", hr)
        write_image(out / "heldout" / "lr" / f"{path.stem}.png", degrade_image(hr, bicubic, SCALE, seed=0)[0])
    print(f"wrote {len(TRAIN_SKIMAGE)} training images and {len(held)} held-out photos under {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("build/model-data"))
    prepare(ap.parse_args().out)


if __name__ == "__main__":
    main()
