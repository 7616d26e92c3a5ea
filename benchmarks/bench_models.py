"""Quality of the bundled models on held-out photos, against bicubic and Lanczos upscaling.

Run: `.venv/bin/python benchmarks/bench_models.py [--precision auto|fp32|bf16] [--json out.json]`
(needs the `bench` extra: scikit-image and scikit-learn, whose sample photos are the test set).

Test set (scripts/model_data.py): scikit-image's coffee and chelsea, scikit-learn's china and
flower; none is used in training. Each HR photo is cropped to a multiple of 4 and downscaled x4
with MATLAB's antialiased bicubic imresize (the usual SR benchmark LR). Metrics follow papers: PSNR
and SSIM on the BT.601 Y channel with a 4-pixel border cropped; RGB PSNR too. Bicubic and Lanczos
are each given in two common implementations, and the goals are checked against the better one.

A second table checks robustness: the same LR photos saved as JPEG (quality 90 and 75) or with
Gaussian noise (sigma 3 of 255, fixed seed) before upscaling, scored against the clean HR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from esrforge.data.codecs import jpeg_compress  # noqa: E402
from esrforge.data.noise import gaussian_noise  # noqa: E402
from esrforge.data.resize import imresize, resize_to  # noqa: E402
from esrforge.images import read_image  # noqa: E402
from esrforge.infer import Upscaler  # noqa: E402
from esrforge.metrics.psnr_ssim import psnr, ssim  # noqa: E402
from esrforge.modelio import BUNDLED, DEFAULT_MODEL, load_model  # noqa: E402

GOALS = {"bicubic": 1.0, "lanczos": 0.6}  # dB of Y-PSNR the default model must gain over each


Y_PSNR = {"crop_border": 4, "y_channel": True}  # the papers' convention, for PSNR and SSIM


def _through_torch(img: np.ndarray, fn) -> np.ndarray:
    """Apply a function on (1, C, H, W) tensors in [0, 1] to an 8-bit HWC image."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255.0
    return (fn(x)[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().byte().numpy()


def opencv_bicubic(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(lr, size[::-1], interpolation=cv2.INTER_CUBIC)


def baselines(lr: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
    h, w = size
    return {
        "bicubic (MATLAB imresize)": _through_torch(lr, lambda x: imresize(x, 4)),
        "bicubic (OpenCV)": opencv_bicubic(lr, size),
        "Lanczos-3 (esrforge)": _through_torch(lr, lambda x: resize_to(x, (h, w), "lanczos")),
        "Lanczos-4 (OpenCV)": cv2.resize(lr, (w, h), interpolation=cv2.INTER_LANCZOS4),
    }


# LR degradations for the robustness table, with the training pipeline's own steps:
# name -> f(lr, photo index) -> degraded lr.
DEGRADED = {
    "JPEG q90": lambda lr, i: _through_torch(lr, lambda x: jpeg_compress(x, 90)),
    "JPEG q75": lambda lr, i: _through_torch(lr, lambda x: jpeg_compress(x, 75)),
    "noise sigma 3": lambda lr, i: _through_torch(
        lr, lambda x: gaussian_noise(x, 3.0, False, torch.Generator().manual_seed(i))),
}


def detail(img: np.ndarray) -> float:
    """Fine-detail energy: mean |Laplacian| of the luma (border 4 cropped)."""
    y = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(y, cv2.CV_32F))[4:-4, 4:-4].mean())


def score(sr: np.ndarray, hr: np.ndarray) -> dict[str, float]:
    return {
        "psnr_y": psnr(sr, hr, **Y_PSNR),
        "ssim_y": ssim(sr, hr, **Y_PSNR),
        "psnr_rgb": psnr(sr, hr, crop_border=4),
        # 1.0 = as much fine detail as the original; bicubic is far below, GAN outputs get closer.
        "detail": detail(sr) / detail(hr),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "build" / "model-data")
    ap.add_argument("--precision", default="auto", help="the models' precision (auto = what `esrforge upscale` uses)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    held = args.data / "heldout"
    import model_data

    if not (held / "lr").is_dir():
        model_data.prepare(args.data)
    photos = sorted((held / "hr").glob("*.png"))
    ups = {m.name: Upscaler([load_model(m.name)], device="cpu", precision=args.precision) for m in BUNDLED}
    results: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, float] = {m: 0.0 for m in ups}
    sizes = []
    robust: dict[str, dict[str, list[float]]] = {}  # condition -> method -> Y-PSNR per photo
    for i, path in enumerate(photos):
        hr, lr = read_image(path), read_image(held / "lr" / path.name)
        sizes.append(f"{path.stem} {hr.shape[1]}x{hr.shape[0]}")
        outs = baselines(lr, hr.shape[:2])
        for name, up in ups.items():
            t0 = time.perf_counter()
            outs[name] = up.upscale(lr)
            seconds[name] += time.perf_counter() - t0
        for method, sr in outs.items():
            results.setdefault(method, {})[path.stem] = score(sr, hr)
        for cond, degrade in DEGRADED.items():
            bad = degrade(lr, i)
            row = robust.setdefault(cond, {})
            row.setdefault("bicubic (OpenCV)", []).append(psnr(opencv_bicubic(bad, hr.shape[:2]), hr, **Y_PSNR))
            for name, up in ups.items():
                row.setdefault(name, []).append(psnr(up.upscale(bad), hr, **Y_PSNR))

    names = [p.stem for p in photos]
    keys = ("psnr_y", "ssim_y", "psnr_rgb", "detail")
    mean = {m: {k: float(np.mean([r[n][k] for n in names])) for k in keys} for m, r in results.items()}
    print(f"# held-out photos: {', '.join(sizes)}")
    print(f"# machine: {model_data.cpu_name()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, models at precision {args.precision}")
    print()
    print("| method | " + " | ".join(f"{n} Y-PSNR / SSIM" for n in names) + " | mean Y-PSNR | mean SSIM | mean RGB PSNR | detail vs HR |")
    print("|---|" + "---|" * (len(names) + 4))
    for m, r in results.items():
        cells = " | ".join(f"{r[n]['psnr_y']:.2f} / {r[n]['ssim_y']:.4f}" for n in names)
        print(f"| {m} | {cells} | {mean[m]['psnr_y']:.2f} | {mean[m]['ssim_y']:.4f} | {mean[m]['psnr_rgb']:.2f} | {mean[m]['detail']:.2f} |")
    print()
    cols = list(next(iter(robust.values())))
    print("Robustness: mean Y-PSNR on degraded LR input")
    print()
    print("| LR input | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for cond, row in robust.items():
        print(f"| {cond} | " + " | ".join(f"{np.mean(row[c]):.2f}" for c in cols) + " |")
    print()
    for name, s in seconds.items():
        print(f"{name}: {s:.2f} s for the {len(photos)} photos on the CPU")

    ok = True
    d = mean[DEFAULT_MODEL]
    for kind, need in GOALS.items():
        best = max((m for m in results if m.lower().startswith(kind)), key=lambda m: mean[m]["psnr_y"])
        best_ssim = max(mean[m]["ssim_y"] for m in results if m.lower().startswith(kind))
        gain = d["psnr_y"] - mean[best]["psnr_y"]
        passed = gain >= need and d["ssim_y"] > best_ssim
        ok &= passed
        print(f"goal: {DEFAULT_MODEL} vs best {kind} ({best}): {gain:+.2f} dB Y-PSNR (need +{need}), "
              f"SSIM {d['ssim_y']:.4f} vs {best_ssim:.4f}: {'met' if passed else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"photos": names, "per_photo": results, "mean": mean, "seconds": seconds,
                                          "robustness_mean_psnr_y": {c: {m: float(np.mean(v)) for m, v in row.items()} for c, row in robust.items()}}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
