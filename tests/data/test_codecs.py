"""JPEG / WebP steps: real OpenCV round trips, channel handling, codec properties, parsing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from esrforge.data.codecs import Jpeg, Webp, jpeg_compress, webp_compress
from esrforge.data.steps import Context, PipelineError, Range

CTX = Context(target=(32, 48), scale=1)


def photo(n: int = 1, h: int = 32, w: int = 48) -> torch.Tensor:
    """Luma texture with smooth chroma, like a photo (JPEG's 4:2:0 subsampling is then benign)."""
    y, x = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    out = []
    for i in range(n):
        lum = 0.5 + 0.3 * torch.sin(x / (2.5 + i)) * torch.cos(y / 3.5)
        tint = torch.stack(
            [0.1 * torch.sin(x / w * 3 + i), 0.1 * torch.cos(y / h * 3), -0.1 * torch.sin((x + y) / (h + w) * 3)]
        )
        out.append((lum + tint).clamp(0, 1))
    return torch.stack(out)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def on_255_grid(y: torch.Tensor) -> bool:
    return torch.allclose(y * 255, (y * 255).round(), atol=1e-3)


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() * 255)


@pytest.mark.parametrize("step, tag", [(Jpeg(), "jpeg"), (Webp(), "webp")])
def test_shape_range_grid_labels(step, tag):
    x = photo(3)
    y, labels = step(x, gen(0), CTX)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert on_255_grid(y)
    lo, hi = step.quality.low, step.quality.high
    for l in labels:
        assert l.startswith(f"{tag} q=") and lo <= int(l.split("=")[1]) <= hi


@pytest.mark.parametrize("step", [Jpeg(), Webp()])
def test_deterministic_per_seed(step):
    x = photo(4)
    a, la = step(x, gen(1), CTX)
    b, lb = step(x, gen(1), CTX)
    c, lc = step(x, gen(2), CTX)
    assert torch.equal(a, b) and la == lb
    assert la != lc and not torch.equal(a, c)


@pytest.mark.parametrize("step", [Jpeg(p=0.0), Webp(p=0.0)])
def test_p0_is_identity(step):
    x = photo(2)
    y, labels = step(x, gen(0), CTX)
    assert torch.equal(y, x) and labels == ["", ""]


def test_dtype_kept():
    x = photo(1).double()
    y = jpeg_compress(x, 50)
    assert y.dtype == torch.float64 and on_255_grid(y)


@pytest.mark.parametrize("q", [30, 60, 90])
def test_jpeg_nearly_idempotent(q):
    y = jpeg_compress(photo(1), q)
    assert mad(jpeg_compress(y, q), y) < 1.0
    gray = y.mean(1, keepdim=True)
    g1 = jpeg_compress(gray, q)
    assert mad(jpeg_compress(g1, q), g1) < 1.0


@pytest.mark.parametrize("fn", [jpeg_compress, webp_compress])
def test_lower_quality_larger_error(fn):
    x = photo(1)
    errs = [mad(fn(x, q), x) for q in (10, 50, 95)]
    assert errs[0] > errs[1] > errs[2] > 0


def test_per_sample_quality():
    x = photo(1).expand(2, -1, -1, -1)
    y = jpeg_compress(x, torch.tensor([10, 95]))
    assert mad(y[0], x[0]) > 2 * mad(y[1], x[1])
    with pytest.raises(ValueError, match="expected 2 qualities"):
        jpeg_compress(x, [10])


def _cv2_reference(x: torch.Tensor, ext: str, flag: int, q: int) -> torch.Tensor:
    """The same round trip written directly against OpenCV, RGB -> BGR -> RGB."""
    rgb = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [flag, q])
    assert ok
    out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize(
    "fn, ext, flag",
    [(jpeg_compress, ".jpg", cv2.IMWRITE_JPEG_QUALITY), (webp_compress, ".webp", cv2.IMWRITE_WEBP_QUALITY)],
)
def test_channel_order_matches_opencv_bgr(fn, ext, flag):
    # A strongly coloured image: feeding RGB where BGR is expected changes the luma and the result.
    x = photo(1)
    x[:, 0] = x[:, 0] * 0.3
    x[:, 2] = 1 - x[:, 2] * 0.5
    ref = _cv2_reference(x, ext, flag, 40)
    assert torch.allclose(fn(x, 40), ref, atol=1e-6)
    swapped = _cv2_reference(x.flip(1), ext, flag, 40).flip(1)
    assert not torch.allclose(swapped, ref, atol=1e-6)  # the check above can tell


@pytest.mark.parametrize("fn", [jpeg_compress, webp_compress])
def test_gray_channel(fn):
    x = photo(2).mean(1, keepdim=True)
    y = fn(x, 70)
    assert y.shape == x.shape and on_255_grid(y)
    assert 0 < mad(y, x) < 4


def test_gray_jpeg_matches_opencv():
    x = photo(1).mean(1, keepdim=True)
    g8 = (x[0, 0].numpy() * 255).round().astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", g8, [cv2.IMWRITE_JPEG_QUALITY, 35])
    ref = torch.from_numpy(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)).float() / 255
    assert torch.allclose(jpeg_compress(x, 35)[0, 0], ref, atol=1e-6)


@pytest.mark.parametrize("fn", [jpeg_compress, webp_compress])
@pytest.mark.parametrize("colour", [1, 3])
def test_alpha_passes_through(fn, colour):
    x = photo(2)[:, :colour]
    alpha = torch.rand(2, 1, 32, 48, generator=gen(0))  # not on the 1/255 grid: must stay exact
    y = fn(torch.cat([x, alpha], 1), 50)
    assert y.shape == (2, colour + 1, 32, 48)
    assert torch.equal(y[:, colour:], alpha)
    assert torch.equal(y[:, :colour], fn(x, 50))


def test_unsupported_channel_count():
    with pytest.raises(ValueError, match="got 5"):
        jpeg_compress(torch.zeros(1, 5, 8, 8), 50)


def test_from_spec_and_defaults():
    assert Jpeg().quality == Range(30, 95, True) and Webp().quality == Range(50, 95, True)
    s = Jpeg.from_spec({"quality": [40, 60], "p": 0.5}, 0)
    assert s.quality == Range(40, 60, True) and s.p == 0.5
    assert Webp.from_spec({"quality": 80}, 0).quality == Range(80, 80, True)


@pytest.mark.parametrize("cls", [Jpeg, Webp])
@pytest.mark.parametrize(
    "value, words",
    [
        (0, "outside the allowed range"),
        ([30, 101], "outside"),
        (50.5, "whole numbers"),
        ("high", "expected a number"),
        ([95, 30], "above high"),
    ],
)
def test_from_spec_errors(cls, value, words):
    with pytest.raises(PipelineError) as e:
        cls.from_spec({"quality": value}, 4)
    assert f"pipeline step 4 ({cls.name}): field 'quality'" in str(e.value) and words in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("step", [Jpeg(p=0.7), Webp()])
def test_cuda_matches_cpu(step):
    x = photo(4)
    a, la = step(x, gen(3), CTX)
    b, lb = step(x.cuda(), gen(3), CTX)
    assert la == lb and b.device.type == "cuda"
    assert torch.equal(a, b.cpu())
