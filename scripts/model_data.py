"""Training and held-out photos for the bundled models, taken from files that ship inside PyPI packages.

    python scripts/model_data.py [--out build/model-data]

writes
    OUT/train/*.png        HR training images (sample photos and textures from PyPI packages)
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
# More photos from inside other PyPI packages' wheels (package, version, path in the wheel, sha256
# prefix of that file). Only the wheel is downloaded (`pip download --no-deps`, fixed platform so
# every machine gets the same file); nothing is installed. Grayscale .npz arrays are PyWavelets'.
TRAIN_WHEELS = (
    ("gradio", "6.31.0", "gradio/media_assets/images/cheetah.jpg", "29b0090f5ec471da"),
    ("gradio", "6.31.0", "gradio/media_assets/images/groot.jpeg", "fff4d05d30088da0"),
    ("gradio", "6.31.0", "gradio/media_assets/images/tower.jpg", "f57f96f7a71f8973"),
    ("gradio", "6.31.0", "gradio/test_data/cheetah2.jpg", "6882e714aa43d60a"),
    ("imgaug", "0.4.0", "imgaug/quokka.jpg", "bf1059d0f925e7d0"),
    ("insightface", "2.1", "insightface/data/images/t1.jpg", "47f682e945b659f9"),
    ("mahotas", "1.4.19", "mahotas/demos/data/DepartmentStore.jpg", "1b6ae6ab0fd75737"),
    ("matplotlib", "3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "a8ca6d734765703b"),
    ("pywavelets", "1.9.0", "pywt/data/aero.npz", "df862635798bac94"),
    ("pywavelets", "1.9.0", "pywt/data/ascent.npz", "a6d56bc8e96571d6"),
    ("ultralytics", "8.4.190", "ultralytics/assets/bus.jpg", "c02019c4979c191e"),
    ("ultralytics", "8.4.190", "ultralytics/assets/zidane.jpg", "16d73869e3267a7d"),
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


def _rgb(img: np.ndarray) -> np.ndarray:
    """Grayscale stored as 3 equal channels, alpha dropped: every training image is RGB."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3]


def _read_rgb(path: Path) -> np.ndarray:
    from esrforge.images import read_image

    return _rgb(read_image(path))


def _wheel(package: str, version: str, cache: Path) -> Path:
    """Download one wheel (no dependencies, nothing installed) into cache, once."""
    import subprocess

    stem = package.replace("-", "_").lower()
    found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--implementation", "cp", "--python-version", "3.11",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
               "-d", str(cache), f"{package}=={version}"]
        if subprocess.run(cmd).returncode != 0:
            sys.exit(f"could not download {package}=={version} (needs the package index): {' '.join(cmd)}")
        found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    if not found:
        sys.exit(f"pip did not leave a {package}=={version} wheel in {cache}")
    return found[0]


def _wheel_image(package: str, version: str, member: str, sha: str, cache: Path) -> np.ndarray:
    """One image file from inside a wheel, checked against its recorded hash."""
    import hashlib
    import io
    import zipfile

    import cv2

    wheel = _wheel(package, version, cache)
    data = zipfile.ZipFile(wheel).read(member)
    if not hashlib.sha256(data).hexdigest().startswith(sha):
        sys.exit(f"{wheel.name}: {member} is not the file these models were trained on (sha256 differs)")
    if member.endswith(".npz"):
        with np.load(io.BytesIO(data)) as arrays:
            return _rgb(arrays[arrays.files[0]].astype(np.uint8))
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


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
    for package, version, member, sha in TRAIN_WHEELS:
        img = _wheel_image(package, version, member, sha, out / "wheels")
        write_image(out / "train" / f"{package}_{Path(member).stem}.png", img)
    held = [ski / n for n in HELDOUT_SKIMAGE] + [skl / n for n in HELDOUT_SKLEARN]
    bicubic = load_pipeline("bicubic")  # MATLAB's antialiased imresize(hr, 1/4): the benchmark LR
    for path in held:
        hr = _read_rgb(path)
        hr = np.ascontiguousarray(hr[: hr.shape[0] // SCALE * SCALE, : hr.shape[1] // SCALE * SCALE])
        write_image(out / "heldout" / "hr" / f"{path.stem}.png", hr)
        write_image(out / "heldout" / "lr" / f"{path.stem}.png", degrade_image(hr, bicubic, SCALE, seed=0)[0])
    print(f"wrote {len(TRAIN_SKIMAGE) + len(TRAIN_WHEELS)} training images and {len(held)} held-out photos under {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("build/model-data"))
    prepare(ap.parse_args().out)


if __name__ == "__main__":
    main()
