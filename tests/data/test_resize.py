import math

import cv2
import numpy as np
import pytest
import torch

from esrforge.data.resize import METHODS, Resize, imresize, resize_to
from esrforge.data.steps import Choice, Context, PipelineError, Range

CTX = Context(target=(8, 12), scale=4)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 2, h: int = 32, w: int = 32, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=gen(seed), dtype=dtype)


# --- an independent oracle of MATLAB's imresize (bicubic, antialiased) --------------------------


def _mcubic(t: float) -> float:
    a = abs(t)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _matlab_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """MATLAB's contributions(), one output pixel at a time, in float64."""
    aa = scale < 1
    width = 4.0 / scale if aa else 4.0
    m = np.zeros((out_len, in_len))
    for i in range(1, out_len + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [(left + p, scale * _mcubic(scale * (u - left - p)) if aa else _mcubic(u - left - p))
                for p in range(math.ceil(width) + 2)]
        total = sum(w for _, w in taps)
        for j, w in taps:
            while j < 1 or j > in_len:  # symmetric padding: 0 -> 1, -1 -> 2, n+1 -> n
                j = 1 - j if j < 1 else 2 * in_len + 1 - j
            m[i - 1, j - 1] += w / total
    return m


def matlab_oracle(img: np.ndarray, out_hw, scales=None) -> np.ndarray:
    """img (C, H, W) float64 -> (C, oh, ow); scales default to out/in (MATLAB given a size)."""
    _, h, w = img.shape
    sh, sw = scales or (out_hw[0] / h, out_hw[1] / w)
    mh, mw = _matlab_matrix(h, out_hw[0], sh), _matlab_matrix(w, out_hw[1], sw)
    return np.stack([mh @ c @ mw.T for c in img])


@pytest.mark.parametrize("size", [(6, 9), (8, 12), (12, 18), (48, 72), (17, 29), (31, 50), (5, 40), (1, 1)])
def test_matlab_matches_oracle(size):
    x = batch(2, 24, 36, seed=1, dtype=torch.float64)
    y = resize_to(x, size, "matlab")
    assert y.shape == (2, 3, *size) and y.dtype == torch.float64
    for i in range(2):
        ref = matlab_oracle(x[i].numpy(), size)
        assert np.abs(y[i].numpy() - ref).max() < 1e-10
    y32 = resize_to(x.float(), size, "matlab")
    assert y32.dtype == torch.float32 and (y32.double() - y).abs().max() < 1e-5


@pytest.mark.parametrize(
    "scale, size",
    [(1 / 4, (6, 9)), (1 / 3, (8, 12)), (1 / 2, (12, 18)), (2, (48, 72)), (4 / 3, (32, 48)), (0.3, (8, 11))],
)
def test_imresize_uses_ceil_size_and_the_given_scale(scale, size):
    x = batch(1, 24, 36, seed=2, dtype=torch.float64)
    y = imresize(x, scale)
    assert y.shape[-2:] == size
    ref = matlab_oracle(x[0].numpy(), size, (scale, scale))
    assert np.abs(y[0].numpy() - ref).max() < 1e-10


# Reference results from MATLAB, as recorded in the tests of GNU Octave's image package
# (inst/imresize.m, 2022 rewrite): imresize(uint8(IN), s, "bicubic") with default antialiasing.
# MATLAB rounds uint8 output its own way, so 1 gray level of difference is accepted there too.
IN = np.array(
    [[116, 227, 153, 69, 146, 194, 59, 130, 139, 106],
     [2, 47, 137, 249, 90, 75, 16, 24, 158, 44],
     [155, 68, 46, 84, 166, 156, 69, 204, 32, 152],
     [71, 221, 137, 230, 210, 153, 192, 115, 30, 118],
     [107, 143, 108, 52, 51, 73, 101, 21, 175, 90],
     [54, 158, 143, 77, 26, 168, 113, 229, 165, 225],
     [9, 47, 133, 135, 130, 207, 236, 43, 19, 73],
     [129, 60, 59, 243, 64, 181, 249, 56, 32, 86]])
MATLAB_OUT = {
    1.5: [[116, 187, 237, 171, 94, 61, 135, 191, 187, 75, 91, 142, 140, 124, 108],
          [43, 92, 143, 149, 164, 163, 119, 123, 118, 44, 38, 80, 151, 118, 62],
          [13, 21, 47, 107, 195, 228, 115, 81, 70, 24, 19, 56, 137, 105, 48],
          [146, 98, 49, 49, 71, 107, 148, 159, 132, 58, 124, 176, 61, 85, 146],
          [118, 139, 144, 92, 116, 168, 201, 188, 159, 140, 167, 158, 27, 69, 153],
          [61, 151, 218, 145, 174, 219, 201, 164, 146, 187, 148, 84, 48, 76, 115],
          [102, 132, 151, 119, 90, 72, 72, 72, 83, 114, 60, 31, 144, 130, 80],
          [81, 121, 154, 133, 87, 41, 19, 67, 116, 95, 108, 140, 183, 180, 163],
          [37, 95, 152, 150, 117, 73, 35, 108, 179, 130, 174, 214, 153, 176, 219],
          [3, 29, 73, 131, 136, 120, 116, 162, 214, 229, 147, 54, 35, 62, 96],
          [67, 54, 51, 83, 153, 187, 111, 141, 210, 255, 149, 22, 13, 42, 74],
          [142, 99, 53, 43, 164, 237, 77, 103, 197, 254, 159, 42, 31, 59, 91]],
    0.5: [[105, 140, 126, 81, 109],
          [110, 134, 153, 114, 93],
          [108, 108, 94, 127, 146],
          [67, 126, 162, 149, 62]],
    4 / 3: [[116, 203, 221, 141, 62, 110, 180, 191, 70, 104, 143, 136, 111, 106],
            [26, 78, 126, 156, 200, 139, 103, 103, 33, 28, 92, 158, 67, 46],
            [51, 35, 51, 112, 195, 146, 101, 87, 29, 57, 100, 114, 81, 74],
            [159, 110, 63, 50, 82, 148, 179, 152, 83, 173, 147, 27, 143, 170],
            [70, 171, 189, 134, 217, 226, 193, 158, 186, 157, 83, 25, 114, 135],
            [91, 152, 162, 116, 118, 114, 102, 98, 138, 65, 60, 127, 92, 84],
            [90, 130, 144, 111, 52, 24, 50, 101, 94, 86, 129, 190, 146, 135],
            [41, 114, 157, 139, 89, 37, 82, 178, 125, 192, 203, 154, 213, 227],
            [4, 33, 89, 141, 127, 118, 151, 213, 232, 119, 35, 34, 81, 92],
            [88, 61, 54, 97, 203, 129, 115, 203, 255, 119, 18, 24, 70, 81],
            [147, 91, 43, 68, 247, 125, 80, 191, 255, 130, 33, 37, 83, 94]],
    1 / 3: [[115, 135, 97, 101],
            [113, 119, 124, 125],
            [81, 157, 118, 64]],
}


@pytest.mark.parametrize("scale", list(MATLAB_OUT))
def test_imresize_matches_published_matlab_values(scale):
    expected = np.array(MATLAB_OUT[scale])
    for dtype in (torch.float64, torch.float32):
        x = torch.tensor(IN / 255.0, dtype=dtype)[None, None]
        y = imresize(x, scale)[0, 0].double().numpy() * 255
        got = np.clip(np.round(y), 0, 255)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1


def test_imresize_same_size_still_interpolates():
    # Factor 0.91 keeps 8 rows (ceil 7.28) yet MATLAB still resamples with that factor.
    x = torch.tensor(IN / 255.0)[None, None]
    y = imresize(x, 0.91)
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert np.abs(y[0].numpy() - matlab_oracle(x[0].numpy(), (8, 10), (0.91, 0.91))).max() < 1e-10
    assert torch.equal(resize_to(x, (8, 10), "matlab"), x)  # a size, by contrast, is a no-op


# --- analytic properties -----------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("size", [(8, 8), (13, 21), (64, 48)])
def test_constant_stays_constant(method, size):
    x = torch.full((1, 2, 24, 32), 0.6)
    y = resize_to(x, size, method)
    assert y.shape == (1, 2, *size)
    assert torch.allclose(y, torch.full_like(y, 0.6), atol=1e-6)


@pytest.mark.parametrize("method", ["matlab", "lanczos"])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_ramp_stays_linear_after_integer_downscale(method, factor):
    h = w = 48
    ramp = (torch.arange(w, dtype=torch.float64) * 0.01 + 0.1).expand(1, 1, h, w)
    y = resize_to(ramp, (h // factor, w // factor), method)[0, 0]
    # Output pixel j covers input pixels j*f .. j*f+f-1, whose centre has value 0.1 + 0.01*(j*f + (f-1)/2).
    j = torch.arange(w // factor, dtype=torch.float64)
    expect = 0.1 + 0.01 * (j * factor + (factor - 1) / 2)
    inner = slice(3, -3)
    assert torch.allclose(y[:, inner], expect[inner].expand_as(y[:, inner]), atol=1e-12)
    assert not torch.allclose(y[:, 0], expect[0].expand_as(y[:, 0]), atol=1e-6)  # mirrored border differs


@pytest.mark.parametrize("method", ["matlab", "lanczos"])
def test_odd_integer_upscale_interpolates_input_pixels(method):
    x = batch(1, 10, 12, seed=3, dtype=torch.float64)
    y = resize_to(x, (30, 36), method)
    # With factor 3 every third output centre lands on an input centre; interpolating kernels
    # (cubic, Lanczos) reproduce the sample there.
    assert torch.allclose(y[..., 1::3, 1::3], x, atol=1e-12)


def test_up_then_down_is_close_to_identity():
    # Smooth (band-limited) content survives x2 then MATLAB's antialiased 1/2 almost unchanged.
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    x = (0.5 + 0.3 * torch.sin(xx / 3) * torch.cos(yy / 4)).double()[None, None]
    back = imresize(imresize(x, 2), 0.5)
    assert back.shape == x.shape
    assert (back - x)[..., 2:-2, 2:-2].abs().max() < 1e-3
    assert (back - x).abs().max() < 1e-2


def test_torch_modes_match_opencv():
    a = np.random.default_rng(0).random((24, 36)).astype(np.float32)
    x = torch.from_numpy(a)[None, None]
    cases = [("bilinear", cv2.INTER_LINEAR, (17, 29)), ("bilinear", cv2.INTER_LINEAR, (48, 72)),
             ("bicubic", cv2.INTER_CUBIC, (31, 50)), ("bicubic", cv2.INTER_CUBIC, (12, 18)),
             ("area", cv2.INTER_AREA, (12, 18)), ("area", cv2.INTER_AREA, (8, 12)),
             ("nearest", cv2.INTER_NEAREST_EXACT, (48, 72)), ("nearest", cv2.INTER_NEAREST_EXACT, (12, 12))]
    for method, flag, (oh, ow) in cases:
        ref = cv2.resize(a, (ow, oh), interpolation=flag)
        assert np.abs(resize_to(x, (oh, ow), method)[0, 0].numpy() - ref).max() < 1e-5, (method, oh, ow)


def test_area_enlarging_axis_uses_bilinear():
    x = batch(1, 24, 36, seed=5)
    y = resize_to(x, (12, 72), "area")
    shrunk = torch.nn.functional.interpolate(x, size=(12, 36), mode="area")
    ref = torch.nn.functional.interpolate(shrunk, size=(12, 72), mode="bilinear", align_corners=False)
    assert torch.allclose(y, ref)


def test_lanczos_matches_pil_away_from_borders():
    Image = pytest.importorskip("PIL.Image")
    a = np.random.default_rng(1).random((40, 56)).astype(np.float32)
    x = torch.from_numpy(a).double()[None, None]
    for oh, ow in [(20, 28), (13, 17), (80, 112)]:
        ref = np.asarray(Image.fromarray(a, mode="F").resize((ow, oh), Image.LANCZOS), dtype=np.float64)
        y = resize_to(x, (oh, ow), "lanczos")[0, 0].numpy()
        b = max(1, math.ceil(3 * max(40 / oh, 1) * oh / 40)) + 1  # output pixels reaching the border
        assert np.abs(y - ref)[b:-b, b:-b].max() < 1e-5


def test_lanczos_antialiases_on_downscale():
    # A Nyquist checkerboard must come out flat gray when shrunk, not as aliased stripes.
    x = ((torch.arange(40)[:, None] + torch.arange(40)[None, :]) % 2).double()[None, None]
    for method in ("lanczos", "matlab"):
        y = resize_to(x, (13, 13), method)[0, 0]
        assert (y[2:-2, 2:-2] - 0.5).abs().max() < 0.02
    y = resize_to(x, (13, 13), "bicubic")[0, 0]  # no antialiasing: stays far from flat
    assert (y[2:-2, 2:-2] - 0.5).abs().max() > 0.1


def test_resize_to_rejects_bad_arguments():
    x = batch(1, 8, 8)
    with pytest.raises(ValueError, match="unknown resize method"):
        resize_to(x, (4, 4), "cubic")
    with pytest.raises(ValueError, match="positive"):
        resize_to(x, (0, 4), "bilinear")
    with pytest.raises(ValueError, match="positive"):
        imresize(x, 0)


# --- the Resize step ---------------------------------------------------------------------------


def test_step_scale_shape_range_labels():
    x = batch(3, 32, 40)
    step = Resize(scale=Range(0.5, 0.5), method=Choice(("bicubic",), (1.0,)))
    y, labels = step(x, gen(0), CTX)
    assert y.shape == (3, 3, 16, 20)
    assert y.min() >= 0 and y.max() <= 1  # bicubic overshoot is clamped
    assert labels == ["resize bicubic x0.50"] * 3


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", [0.37, 1.6])
def test_step_output_stays_in_range(method, scale):
    # Hard 0/1 edges make cubic and Lanczos kernels ring past the range before clamping.
    x = (torch.rand(2, 1, 8, 8, generator=gen(0)) > 0.5).float().repeat_interleave(4, -1).repeat_interleave(4, -2)
    assert resize_to(x, (round(32 * scale),) * 2, "lanczos").max() > 1  # the edges do overshoot
    y, _ = Resize(scale=Range(scale, scale), method=Choice((method,), (1.0,)))(x, gen(0), CTX)
    assert y.shape[-2:] == (round(32 * scale),) * 2
    assert y.min() >= 0 and y.max() <= 1


def test_step_rounds_half_up_and_never_below_one():
    x = batch(1, 10, 3)
    y, _ = Resize(scale=Range(0.25, 0.25), method=Choice(("area",), (1.0,)))(x, gen(0), CTX)
    assert y.shape[-2:] == (3, 1)  # 2.5 -> 3, 0.75 -> 1
    y, _ = Resize(scale=Range(0.05, 0.05))(x, gen(0), CTX)
    assert y.shape[-2:] == (1, 1)


def test_step_deterministic_and_seed_dependent():
    x = batch(2)
    step = Resize(scale=Range(0.3, 1.8), method=Choice(METHODS, (1.0,) * len(METHODS)))
    y1, l1 = step(x, gen(7), CTX)
    y2, l2 = step(x, gen(7), CTX)
    assert torch.equal(y1, y2) and l1 == l2
    y3, l3 = step(x, gen(8), CTX)
    assert l3 != l1 and (y3.shape != y1.shape or not torch.equal(y3, y1))


def test_step_p_zero_is_identity():
    x = batch(2)
    y, labels = Resize(p=0.0, scale=Range(0.5, 0.5))(x, gen(0), CTX)
    assert y is x or torch.equal(y, x)
    assert labels == ["", ""]


def test_step_to_target_and_relative_to_target():
    x = batch(2, 32, 48)
    y, labels = Resize(to="target", method=Choice(("area",), (1.0,)))(x, gen(0), CTX)
    assert y.shape[-2:] == CTX.target and labels == ["resize area -> 12x8"] * 2  # width x height
    step = Resize(scale=Range(2.0, 2.0), relative_to="target", method=Choice(("bilinear",), (1.0,)))
    y, labels = step(x, gen(0), CTX)
    assert y.shape[-2:] == (16, 24) and labels[0] == "resize bilinear x2.00 of target"


def test_step_updown_branches():
    x = batch(1, 20, 20)

    def scales(updown, n=40):
        step = Resize(scale=Range(0.5, 1.5), updown=updown)
        return [float(step(x, gen(s), CTX)[1][0].split()[2][1:]) for s in range(n)]

    up, down, keep = scales((1, 0, 0)), scales((0, 1, 0)), scales((0, 0, 1))
    assert all(1 <= s <= 1.5 for s in up) and len(set(up)) > 10
    assert all(0.5 <= s <= 1 for s in down) and len(set(down)) > 10
    assert keep == [1.0] * 40
    mixed = scales((0.5, 0.5, 0), n=60)
    assert any(s > 1 for s in mixed) and any(s < 1 for s in mixed)


def test_step_method_drawn_per_batch():
    x = batch(2, 16, 16)
    step = Resize(scale=Range(0.5, 0.5), method=Choice(("area", "bilinear", "matlab"), (1.0, 1.0, 1.0)))
    seen = {step(x, gen(s), CTX)[1][0].split()[1] for s in range(30)}
    assert seen == {"area", "bilinear", "matlab"}


def test_step_output_matches_resize_to():
    x = batch(2, 24, 24)
    y, _ = Resize(scale=Range(0.5, 0.5), method=Choice(("matlab",), (1.0,)))(x, gen(0), CTX)
    assert torch.equal(y, resize_to(x, (12, 12), "matlab").clamp(0, 1))


# --- YAML parsing ------------------------------------------------------------------------------


def test_from_spec_examples():
    methods = ["area", "bilinear", "bicubic"]
    s = Resize.from_spec({"scale": [0.15, 1.5], "updown": [0.2, 0.7, 0.1], "method": methods}, 0)
    assert s.scale == Range(0.15, 1.5) and s.updown == (0.2, 0.7, 0.1) and s.method.options == tuple(methods)
    s = Resize.from_spec({"updown": {"up": 1, "down": 2}, "scale": [0.5, 2]}, 0)
    assert s.updown == (1.0, 2.0, 0.0)
    s = Resize.from_spec({"to": "target", "method": "area", "p": 1}, 0)
    assert s.to == "target"
    s = Resize.from_spec({"scale": 0.5, "relative_to": "target"}, 0)
    assert s.relative_to == "target"
    assert Resize.batch_wide


@pytest.mark.parametrize(
    "spec, field, match",
    [
        ({"to": "target", "scale": 0.5}, "scale", "cannot be combined"),
        ({"to": "target", "updown": [1, 1, 1]}, "updown", "cannot be combined"),
        ({"to": "target", "relative_to": "target"}, "relative_to", "cannot be combined"),
        ({"to": "lr"}, "to", "only allowed value is 'target'"),
        ({"updown": [0.5, 0.5]}, "updown", "up, down, keep"),
        ({"updown": [0, 0, 0]}, "updown", "positive sum"),
        ({"updown": [1, -1, 1]}, "updown", "up, down, keep"),
        ({"updown": {"up": 1, "sideways": 1}}, "updown", "sideways"),
        ({"updown": [0.2, 0.7, 0.1], "scale": [0.3, 0.8]}, "scale", "contain 1"),
        ({"scale": [0.01, 2]}, "scale", "outside the allowed range"),
        ({"scale": "half"}, "scale", "expected a number"),
        ({"relative_to": "hr"}, "relative_to", "'current' or 'target'"),
        ({"method": "cubic"}, "method", "unknown 'cubic'"),
    ],
)
def test_from_spec_errors_name_step_and_field(spec, field, match):
    with pytest.raises(PipelineError, match=match) as e:
        Resize.from_spec(spec, 7)
    assert f"pipeline step 7 (resize): field '{field}'" in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = batch(2, 40, 40)
    for method in METHODS:
        step = Resize(scale=Range(0.3, 1.7), method=Choice((method,), (1.0,)))
        y_cpu, l_cpu = step(x, gen(3), CTX)
        y_gpu, l_gpu = step(x.cuda(), gen(3), CTX)
        assert y_gpu.device.type == "cuda" and l_cpu == l_gpu
        assert torch.allclose(y_gpu.cpu(), y_cpu, atol=1e-4), method
    y = imresize(x.cuda(), 0.25)
    assert torch.allclose(y.cpu(), imresize(x, 0.25), atol=1e-5)
