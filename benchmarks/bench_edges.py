"""Image borders: the network's own zero padding against mirrored or replicated context.

Run: `.venv/bin/python benchmarks/bench_edges.py` (needs the `bench` extra: scikit-image).

Users report border artifacts from zero padding, and `--seamless mirror|replicate` would give the
network real-looking context past the edge instead (Real-ESRGAN's `pre_pad` does the same). Which
is closer to the truth is measured here: each of scikit-image's sample photos (gray ones made RGB)
is cropped to a multiple of 4 and downscaled x4 with MATLAB's bicubic imresize, upscaled by each
bundled model three ways (plain, mirror, replicate; whole image, fp32), and scored against the HR
photo by RGB PSNR in the 8-pixel band along the edges and over the whole image.
"""

from __future__ import annotations

import numpy as np
import skimage.data as sd
import torch

from esrforge.data.resize import imresize
from esrforge.infer import Upscaler
from esrforge.modelio import load_model

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera", "moon",
          "page", "text", "coins", "brick"]
MODES = (None, "mirror", "replicate")
BAND = 8


def psnr(err: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / err.mean()))


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help, and no stray options
    for name in ("photo_x4", "photo_x4_gan"):
        lm = load_model(name)
        border: dict[str | None, list[float]] = {m: [] for m in MODES}
        whole: dict[str | None, list[float]] = {m: [] for m in MODES}
        for photo in PHOTOS:
            hr = getattr(sd, photo)()
            if hr.ndim == 2:
                hr = np.repeat(hr[:, :, None], 3, 2)
            hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4, :3]
            t = torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255
            lr = (imresize(t, 0.25)[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
            band = np.ones(hr.shape[:2], bool)
            band[BAND:-BAND, BAND:-BAND] = False
            for mode in MODES:
                out = Upscaler(lm, tile=0, precision="fp32", seamless=mode).upscale(lr)
                err = (out.astype(np.float64) - hr) ** 2
                border[mode].append(psnr(err[band]))
                whole[mode].append(psnr(err))
        for mode in MODES:
            print(f"| {name} | {mode or 'plain (zero padding)'} | {np.mean(border[mode]):.2f} | {np.mean(whole[mode]):.2f} |")


if __name__ == "__main__":
    main()
