"""Quantize and dither steps: level counts, mean preservation, exactness of the wavefront error
diffusion against a per-pixel reference, palettes, speed, parsing, CPU/GPU agreement."""

from __future__ import annotations

import time

import pytest
import torch

from esrforge.data.dither import (
    Dither,
    Quantize,
    bayer_matrix,
    error_diffusion,
    kmeans_palette,
    ordered_dither,
    quantize,
)
from esrforge.data.steps import Choice, Context, PipelineError, Range
from tests.conftest import photo_like

CTX = Context(target=(24, 32), scale=1)
DIFFUSE = ("floyd_steinberg", "atkinson")


def batch(n: int = 3, h: int = 24, w: int = 32, c: int = 3) -> torch.Tensor:
    return torch.stack([torch.from_numpy(photo_like(h, w, c, seed=i)).permute(2, 0, 1) for i in range(n)]).float() / 255


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dither_with(method: str, levels: int, x: torch.Tensor, bayer: int = 4) -> torch.Tensor:
    return ordered_dither(x, levels, bayer) if method == "ordered" else error_diffusion(x, levels, method)


def colours(img: torch.Tensor) -> int:
    return torch.unique(img.flatten(1).T, dim=0).shape[0]


# --- quantize ----------------------------------------------------------------------------------


def test_quantize_levels():
    x = batch()
    y = quantize(x, torch.tensor([2, 5, 64]))
    for img, L in zip(y, (2, 5, 64)):
        vals = img.unique()
        assert len(vals) <= L
        assert torch.allclose(vals * (L - 1), (vals * (L - 1)).round(), atol=1e-5)
    assert set(y[0].unique().tolist()) <= {0.0, 1.0}
    assert (y[1] - x[1]).abs().max() <= 0.5 / 4 + 1e-6  # 5 levels: within half a step
    assert (y[2] - x[2]).abs().max() <= 0.5 / 63 + 1e-6


def test_quantize_step():
    x = batch()
    y, labels = Quantize(levels=Range(4, 4, True))(x, gen(0), CTX)
    assert torch.equal(y, quantize(x, 4)) and labels == ["quantize 4 levels"] * 3
    a, la = Quantize()(x, gen(1), CTX)
    b, lb = Quantize()(x, gen(1), CTX)
    c, lc = Quantize()(x, gen(2), CTX)
    assert torch.equal(a, b) and la == lb and la != lc
    y, labels = Quantize(p=0.0)(x, gen(0), CTX)
    assert torch.equal(y, x) and labels == [""] * 3


# --- dithering properties ------------------------------------------------------------------------


def test_bayer_matrix():
    assert bayer_matrix(2).tolist() == [[0, 2], [3, 1]]
    assert bayer_matrix(4).tolist() == [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]
    assert sorted(bayer_matrix(8).flatten().tolist()) == list(range(64))
    with pytest.raises(ValueError):
        bayer_matrix(6)


@pytest.mark.parametrize("method", ["ordered", *DIFFUSE])
def test_two_levels_are_binary(method):
    y = dither_with(method, 2, batch())
    assert set(y.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("method", ["ordered", *DIFFUSE])
@pytest.mark.parametrize("levels", [3, 6])
def test_at_most_L_levels(method, levels):
    y = dither_with(method, levels, batch())
    for ch in y.transpose(0, 1):
        vals = ch.unique()
        assert 2 <= len(vals) <= levels
        assert torch.allclose(vals * (levels - 1), (vals * (levels - 1)).round(), atol=1e-5)


@pytest.mark.parametrize("method", ["ordered", *DIFFUSE])
@pytest.mark.parametrize("levels", [2, 5])
def test_mean_of_constant_gray_preserved(method, levels):
    grays = torch.tensor([0.03, 0.15, 0.3, 0.45, 0.6, 0.7, 0.85, 0.97])
    x = grays.view(-1, 1, 1, 1).expand(-1, 1, 32, 32).contiguous()
    y = dither_with(method, levels, x)
    err = (y.mean((1, 2, 3)) - grays).abs()
    assert float(err.max()) <= 1 / (2 * (levels - 1))
    # ... and it is real dithering: a gray between levels (0.6) gets both neighbours.
    assert len(y[4].unique()) == 2


@pytest.mark.parametrize("method", DIFFUSE)
def test_ramp_columns_are_monotonic(method):
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 1, 32, 64)
    y = error_diffusion(ramp, 2, method)
    col = y.mean((0, 1, 2))
    smooth = torch.nn.functional.avg_pool1d(col.view(1, 1, -1), 8, 1).flatten()
    assert float(smooth.diff().min()) >= -1e-6
    assert float((col - ramp[0, 0, 0]).abs().max()) < 0.2
    assert col[:8].mean() < 0.1 and col[-8:].mean() > 0.9


# Textbook push form, written out independently of the module's table: (dy, dx, weight) is
# where the current pixel's error goes.
PUSH = {
    "floyd_steinberg": [(0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16)],
    "atkinson": [(0, 1, 1 / 8), (0, 2, 1 / 8), (1, -1, 1 / 8), (1, 0, 1 / 8), (1, 1, 1 / 8), (2, 0, 1 / 8)],
}


def _naive_diffusion(x: torch.Tensor, levels: int, method: str) -> torch.Tensor:
    """Raster-order error diffusion, one pixel at a time."""
    img = x.clone().double()
    n, c, h, w = img.shape
    s = levels - 1
    out = torch.empty_like(img)
    for y in range(h):
        for xx in range(w):
            v = img[:, :, y, xx]
            q = (v * s).round().clamp(0, s) / s
            out[:, :, y, xx] = q
            for dy, dx, wgt in PUSH[method]:
                if 0 <= y + dy < h and 0 <= xx + dx < w:
                    img[:, :, y + dy, xx + dx] += wgt * (v - q)
    return out


@pytest.mark.parametrize("method", DIFFUSE)
def test_wavefront_matches_per_pixel_reference(method):
    for x in (batch(2, 7, 9), torch.rand(1, 3, 12, 15, generator=gen(0))):
        for levels in (2, 3, 8):
            y = error_diffusion(x, levels, method)
            # float32 vs float64 could in principle flip an exact rounding tie; these inputs have none.
            assert torch.allclose(y.double(), _naive_diffusion(x, levels, method), atol=1e-6)
            assert not torch.equal(y, quantize(x, levels))  # diffusion did something


def test_floyd_steinberg_speed():
    x = torch.rand(8, 3, 64, 64, generator=gen(0))
    error_diffusion(x, 8)  # warm-up (index plan cache, allocator)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        error_diffusion(x, 8)
        best = min(best, time.perf_counter() - t)
    assert best < 0.2, f"{best:.3f} s"


# --- palettes ------------------------------------------------------------------------------------


def test_kmeans_palette_shape_and_padding():
    x = batch(2)
    pal = kmeans_palette(x, [4, 8], gen(0))
    assert pal.shape == (2, 8, 3)
    assert colours(pal[0].T) == 4 and colours(pal[1].T) <= 8
    assert torch.allclose(pal * 255, (pal * 255).round(), atol=1e-4)  # 8-bit entries
    assert torch.equal(pal, kmeans_palette(x, [4, 8], gen(0)))


@pytest.mark.parametrize("method", ["ordered", *DIFFUSE])
def test_palette_limits_colours(method):
    x = batch(2)
    step = Dither(method=Choice((method,), (1.0,)), palette=Range(6, 6, True))
    y, labels = step(x, gen(0), CTX)
    assert labels[0].startswith("dither ") and labels[0].endswith("palette 6")
    for img in y:
        assert 2 <= colours(img) <= 6
    # The palette tracks the image: much closer than a 6-colour uniform guess would be.
    assert float((y - x).abs().mean()) < 0.2


def test_palette_sizes_per_sample():
    x = batch(4)
    y, labels = Dither(palette=Range(2, 16, True))(x, gen(3), CTX)
    for img, lab in zip(y, labels):
        assert colours(img) <= int(lab.split()[-1])


# --- the step ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ordered", *DIFFUSE])
def test_step_shape_range_determinism(method):
    x = batch(4)
    step = Dither(method=Choice((method,), (1.0,)), bayer=Range(2, 8, True))
    a, la = step(x, gen(1), CTX)
    b, lb = step(x, gen(1), CTX)
    c, lc = step(x, gen(2), CTX)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and la == lb
    assert la != lc and not torch.equal(a, c)


def test_step_labels_and_bayer_sampling():
    x = batch(32, 8, 8)
    _, labels = Dither.from_spec({"method": "ordered", "bayer": [2, 8], "levels": 4}, 0)(x, gen(0), CTX)
    assert {l for l in labels} == {"dither bayer2 4 levels", "dither bayer4 4 levels", "dither bayer8 4 levels"}
    _, labels = Dither.from_spec({"method": {"floyd_steinberg": 1, "atkinson": 1}, "levels": 8}, 0)(x, gen(0), CTX)
    assert set(labels) == {"dither fs 8 levels", "dither atkinson 8 levels"}


def test_step_uses_drawn_levels():
    x = batch(1)
    y, labels = Dither(levels=Range(4, 4, True))(x, gen(0), CTX)
    assert torch.equal(y, error_diffusion(x, 4))
    step = Dither(method=Choice(("ordered",), (1.0,)), levels=Range(4, 4, True), bayer=Range(8, 8, True))
    y, _ = step(x, gen(0), CTX)
    assert torch.equal(y, ordered_dither(x, 4, 8))


def test_p0_is_identity():
    x = batch()
    y, labels = Dither(p=0.0)(x, gen(0), CTX)
    assert torch.equal(y, x) and labels == [""] * 3


def test_from_spec_parses_fields():
    s = Dither.from_spec({"method": ["ordered", "atkinson"], "levels": [2, 8], "bayer": [2, 4], "palette": [8, 32]}, 1)
    assert s.method.options == ("ordered", "atkinson")
    assert s.bayer == Range(2, 4, True) and s.palette == Range(8, 32, True)
    assert Dither().palette is None and Dither().bayer == Range(4, 4, True)


@pytest.mark.parametrize(
    "cls, spec, field, words",
    [
        (Dither, {"bayer": 3}, "bayer", "powers of two"),
        (Dither, {"bayer": [2, 6]}, "bayer", "powers of two"),
        (Dither, {"bayer": 16}, "bayer", "outside the allowed range"),
        (Dither, {"method": "random"}, "method", "unknown 'random'"),
        (Dither, {"levels": 1}, "levels", "outside"),
        (Dither, {"levels": 4.5}, "levels", "whole numbers"),
        (Dither, {"palette": 1}, "palette", "outside"),
        (Dither, {"palette": "many"}, "palette", "expected a number"),
        (Quantize, {"levels": [2, 300]}, "levels", "outside"),
        (Quantize, {"levels": "x"}, "levels", "expected a number"),
    ],
)
def test_from_spec_errors(cls, spec, field, words):
    with pytest.raises(PipelineError) as e:
        cls.from_spec(spec, 5)
    msg = str(e.value)
    assert f"pipeline step 5 ({cls.name}): field '{field}'" in msg and words in msg


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("palette", [None, Range(4, 12, True)])
def test_cuda_matches_cpu(palette):
    x = batch(4)
    methods = Choice(("ordered", "floyd_steinberg", "atkinson"), (1.0, 1.0, 1.0))
    step = Dither(method=methods, bayer=Range(2, 8, True), palette=palette)
    a, la = step(x, gen(4), CTX)
    b, lb = step(x.cuda(), gen(4), CTX)
    assert la == lb and b.device.type == "cuda"
    # Float rounding may flip a rare exact tie; nearly every pixel must agree.
    assert float((a - b.cpu()).abs().gt(1e-5).float().mean()) < 0.01
