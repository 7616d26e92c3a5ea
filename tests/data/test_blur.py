import math

import pytest
import torch

from esrforge.data import blur as blur_mod
from esrforge.data.blur import KINDS, Blur, make_kernel
from esrforge.data.filters import filter2d, gaussian_kernel
from esrforge.data.steps import Choice, Context, PipelineError, Range

CTX = Context(target=(8, 8), scale=4)
ALL = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso", "sinc", "box")


def batch(n: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hf_energy(x: torch.Tensor) -> float:
    """Energy of horizontal + vertical pixel differences (a high-pass measure)."""
    return float((x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean())


KW = {
    "iso": dict(sigma_x=1.5),
    "aniso": dict(sigma_x=2.5, sigma_y=0.6, theta=0.4),
    "generalized_iso": dict(sigma_x=1.5, beta=2.5),
    "generalized_aniso": dict(sigma_x=2.5, sigma_y=0.6, theta=0.4, beta=0.7),
    "plateau_iso": dict(sigma_x=1.5, beta=1.5),
    "plateau_aniso": dict(sigma_x=2.5, sigma_y=0.6, theta=0.4, beta=1.2),
    "sinc": dict(cutoff=math.pi / 3),
    "box": dict(),
}


# --- make_kernel -------------------------------------------------------------------------------


def test_kinds_list_is_complete():
    assert set(KINDS) == set(ALL)


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("size", [7, 13, 21])
def test_kernels_are_normalised_float64(kind, size):
    k = make_kernel(kind, size, **KW[kind])
    assert k.shape == (size, size) and k.dtype == torch.float64
    assert torch.isfinite(k).all()
    assert abs(k.sum().item() - 1) < 1e-12
    # The centre is the peak for every kind here (single-lobed or sinc main lobe).
    assert k[size // 2, size // 2] == k.max()


@pytest.mark.parametrize("kind", ["iso", "generalized_iso", "plateau_iso", "sinc", "box"])
def test_isotropic_kinds_are_symmetric(kind):
    # Iso kinds must ignore sigma_y and theta even when passed.
    k = make_kernel(kind, 15, **{**KW[kind], **({"sigma_y": 0.3, "theta": 0.7} if "sigma_x" in KW[kind] else {})})
    assert torch.allclose(k, k.T, atol=1e-15)
    assert torch.allclose(k, k.flip(0), atol=1e-15)
    assert torch.allclose(k, k.flip(1), atol=1e-15)


def test_iso_matches_gaussian_kernel_and_beta_one_is_gaussian():
    ref = gaussian_kernel(13, 1.7)
    assert torch.allclose(make_kernel("iso", 13, sigma_x=1.7), ref, atol=1e-15)
    assert torch.allclose(make_kernel("gaussian", 13, sigma_x=1.7), ref, atol=1e-15)
    assert torch.allclose(make_kernel("generalized_iso", 13, sigma_x=1.7, beta=1.0), ref, atol=1e-15)
    # Beta above 1 flattens the top and steepens the shoulder: less weight in the centre tap's tail.
    sharp = make_kernel("generalized_iso", 13, sigma_x=1.7, beta=3.0)
    assert sharp[6, 12] < ref[6, 12]


def test_plateau_shape_follows_its_formula():
    s, beta = 1.3, 1.6
    k = make_kernel("plateau_iso", 11, sigma_x=s, beta=beta)
    # k(0) / k(d) = 1 + (|d|^2 / s^2)^beta; check at d = (0, 3) and (2, 2).
    for dy, dx in [(0, 3), (2, 2)]:
        q = (dy * dy + dx * dx) / (s * s)
        assert k[5, 5] / k[5 + dy, 5 + dx] == pytest.approx(1 + q**beta, rel=1e-12)


def test_aniso_orientation_and_rotation():
    a = make_kernel("aniso", 15, sigma_x=3.0, sigma_y=0.7, theta=0.0)
    r = torch.arange(15, dtype=torch.float64) - 7
    var_cols = (a.sum(0) * r**2).sum()  # spread along x (columns)
    var_rows = (a.sum(1) * r**2).sum()
    assert var_cols > 5 * var_rows
    # A quarter turn swaps the axes; half a turn is the same ellipse.
    assert torch.allclose(make_kernel("aniso", 15, sigma_x=3.0, sigma_y=0.7, theta=math.pi / 2), a.T, atol=1e-12)
    for kind in ("aniso", "generalized_aniso", "plateau_aniso"):
        kw = {**KW[kind], "theta": 0.9}
        k1 = make_kernel(kind, 15, **kw)
        k2 = make_kernel(kind, 15, **{**kw, "theta": 0.9 + math.pi})
        assert torch.allclose(k1, k2, atol=1e-12)
        assert not torch.allclose(k1, k1.T, atol=1e-4)  # genuinely anisotropic and rotated


@pytest.mark.parametrize("kind", ["aniso", "generalized_aniso", "plateau_aniso"])
def test_aniso_matches_the_covariance_definition(kind):
    # q = d^T Sigma^-1 d with Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T, d = (column, row) offset.
    sx, sy, theta, beta = 2.2, 0.8, 0.6, 1.3
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    sigma = rot @ torch.diag(torch.tensor([sx * sx, sy * sy], dtype=torch.float64)) @ rot.T
    inv = torch.linalg.inv(sigma)
    r = torch.arange(11, dtype=torch.float64) - 5
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    d = torch.stack([xx, yy], -1)
    q = torch.einsum("...i,ij,...j->...", d, inv, d)
    ref = {
        "aniso": torch.exp(-0.5 * q),
        "generalized_aniso": torch.exp(-0.5 * q**beta),
        "plateau_aniso": 1 / (1 + q**beta),
    }[kind]
    k = make_kernel(kind, 11, sigma_x=sx, sigma_y=sy, theta=theta, beta=beta)
    assert torch.allclose(k, ref / ref.sum(), atol=1e-14)


def test_box_is_uniform():
    k = make_kernel("box", 9)
    assert torch.allclose(k, torch.full((9, 9), 1 / 81, dtype=torch.float64))


def test_sinc_is_a_circular_low_pass():
    k = make_kernel("sinc", 21, cutoff=math.pi / 2)
    assert k.min() < 0  # ringing lobes
    resp = torch.fft.fft2(k, s=(256, 256)).abs()

    def at(f):  # frequency as a fraction of pi -> bin
        return int(round(f / 2 * 256))

    assert resp[0, 0] == pytest.approx(1.0)
    assert resp[0, at(0.1)] > 0.85 and resp[at(0.1), 0] > 0.85
    assert resp[0, at(0.75)] < 0.1 and resp[at(0.75), 0] < 0.1
    assert resp[at(0.6), at(0.6)] < 0.1  # diagonal: radius 0.85 pi, also stopped (circular)
    # Centre value of the unnormalised formula is omega^2 / (4 pi): check the ratio to a ring tap.
    w = 1.1
    k = make_kernel("sinc", 9, cutoff=w)
    j1 = torch.special.bessel_j1(torch.tensor(2 * w, dtype=torch.float64)).item()
    assert k[4, 4] / k[4, 6] == pytest.approx((w * w / (4 * math.pi)) / (w * j1 / (2 * math.pi * 2)), rel=1e-10)


def test_make_kernel_rejects_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        make_kernel("iso", 8, sigma_x=1.0)
    with pytest.raises(ValueError, match="unknown kernel"):
        make_kernel("motion", 7, sigma_x=1.0)
    with pytest.raises(ValueError, match="sigma_x"):
        make_kernel("aniso", 7)
    with pytest.raises(ValueError, match="cutoff"):
        make_kernel("sinc", 7, sigma_x=1.0)


# --- the Blur step -----------------------------------------------------------------------------


def test_blur_shape_range_labels():
    x = batch(4)
    step = Blur(kernel=Choice(ALL, (1.0,) * len(ALL)))
    y, labels = step(x, gen(0), CTX)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert len(labels) == 4 and all(lab.startswith("blur ") and " k=" in lab for lab in labels)
    assert not torch.equal(y, x)


def test_blur_is_deterministic_per_seed():
    x = batch(3)
    step = Blur(kernel=Choice(ALL, (1.0,) * len(ALL)))
    y1, l1 = step(x, gen(5), CTX)
    y2, l2 = step(x, gen(5), CTX)
    y3, l3 = step(x, gen(6), CTX)
    assert torch.equal(y1, y2) and l1 == l2
    assert not torch.equal(y1, y3) and l1 != l3


def test_blur_p_zero_is_identity():
    x = batch(3)
    y, labels = Blur(p=0.0)(x, gen(0), CTX)
    assert torch.equal(y, x) and labels == ["", "", ""]


def test_blur_p_half_leaves_unfired_samples_alone():
    x = batch(8)
    y, labels = Blur(p=0.5)(x, gen(3), CTX)
    fired = [lab != "" for lab in labels]
    assert any(fired) and not all(fired)
    for i, f in enumerate(fired):
        assert torch.equal(y[i], x[i]) != f


@pytest.mark.parametrize("kind", ALL)
def test_blur_keeps_constants_and_removes_high_frequencies(kind):
    step = Blur(kernel=Choice((kind,), (1.0,)), size=Range(7, 21, True))
    const = torch.full((3, 3, 32, 32), 0.37)
    y, _ = step(const, gen(1), CTX)
    assert torch.allclose(y, const, atol=1e-6)  # no dark frame: reflect padding, normalised kernel
    x = batch(3)
    y, _ = step(x, gen(1), CTX)
    for i in range(3):
        assert hf_energy(y[i]) < 0.8 * hf_energy(x[i])


def test_mixed_sizes_are_zero_padded_and_centred(monkeypatch):
    made = []

    def recording(*a, **kw):
        k = make_kernel(*a, **kw)
        made.append(k)
        return k

    monkeypatch.setattr(blur_mod, "make_kernel", recording)
    step = Blur(kernel=Choice(("aniso", "sinc", "box"), (1.0, 1.0, 1.0)), size=Range(3, 21, True))
    x = batch(6)
    y, labels = step(x, gen(11), CTX)
    sizes = [k.shape[0] for k in made]
    assert len(set(sizes)) > 1
    for i, k in enumerate(made):
        assert f"k={k.shape[0]}" in labels[i]
        alone = filter2d(x[i : i + 1], k).clamp(0, 1)
        assert torch.allclose(y[i : i + 1], alone, atol=1e-5)


def test_sizes_are_odd_and_cover_the_range():
    step = Blur(size=Range(6, 12, True))
    sizes = step._sizes(gen(0), 300)
    assert set(sizes) == {7, 9, 11}
    assert Blur(size=Range(8, 10, True))._sizes(gen(0), 20) == [9] * 20


def _labels(step, n=64, seed=0, hw=16):
    return step(torch.rand(n, 1, hw, hw, generator=gen(seed)), gen(seed), CTX)[1]


def test_labels_report_drawn_parameters_within_their_ranges():
    step = Blur(kernel=Choice(("aniso",), (1.0,)), sigma=Range(0.5, 1.5), size=Range(7, 9, True))
    for lab in _labels(step):
        kind, s, r, k = lab.split()[1:]
        assert kind == "aniso"
        sx, sy = map(float, s[2:].split("/"))
        assert 0.5 <= sx <= 1.5 and 0.5 <= sy <= 1.5
        assert -180 <= int(r[2:-3]) <= 180
        assert k in ("k=7", "k=9")
    for lab in _labels(Blur(kernel=Choice(("plateau",), (1.0,)), beta_plateau=Range(1.2, 1.4))):
        assert lab.split()[1] == "plateau_iso"
        assert 1.2 <= float(lab.split()[3][2:]) <= 1.4


def test_auto_cutoff_depends_on_kernel_size():
    def cutoffs(size):
        step = Blur(kernel=Choice(("sinc",), (1.0,)), size=size)
        return [float(lab.split()[2][2:]) for lab in _labels(step, n=200)]

    small = cutoffs(Range(7, 11, True))
    large = cutoffs(Range(13, 21, True))
    assert min(small) >= math.pi / 3 - 0.005 and max(small) <= math.pi + 0.005
    assert min(large) >= math.pi / 5 - 0.005 and min(large) < math.pi / 3  # the wider range is used
    step = Blur(kernel=Choice(("sinc",), (1.0,)), cutoff=Range(1.0, 1.2))
    fixed = [float(lab.split()[2][2:]) for lab in _labels(step)]
    assert all(0.995 <= c <= 1.205 for c in fixed)


def test_weighted_kernel_choice_and_aliases():
    step = Blur.from_spec({"kernel": {"gaussian": 1.0, "box": 0.0}}, 0)
    assert {lab.split()[1] for lab in _labels(step)} == {"iso"}
    step = Blur.from_spec({"kernel": ["generalized", "plateau"]}, 0)
    assert {lab.split()[1] for lab in _labels(step, n=100)} == {"generalized_iso", "plateau_iso"}


# --- YAML parsing ------------------------------------------------------------------------------


def test_from_spec_examples():
    s = Blur.from_spec({"p": 0.8, "kernel": ["gaussian", "generalized", "plateau"], "sigma": [0.2, 3.0]}, 2)
    assert s.p == 0.8 and s.kernel.options == ("gaussian", "generalized", "plateau") and s.sigma == Range(0.2, 3.0)
    w = {"iso": 0.45, "aniso": 0.25, "generalized_iso": 0.12, "generalized_aniso": 0.03}
    w |= {"plateau_iso": 0.12, "plateau_aniso": 0.03}
    s = Blur.from_spec({"kernel": w, "size": [7, 21]}, 0)
    assert dict(zip(s.kernel.options, s.kernel.weights)) == w
    assert Blur.from_spec({"cutoff": "auto"}, 0).cutoff == Range(0, 0)
    assert Blur.from_spec({"cutoff": [1.0, 3.0]}, 0).cutoff == Range(1.0, 3.0)
    assert Blur.from_spec({}, 0) == Blur()


@pytest.mark.parametrize(
    "spec, field, match",
    [
        ({"kernel": "motion"}, "kernel", "unknown 'motion'"),
        ({"kernel": {"iso": "lots"}}, "kernel", "weights"),
        ({"sigma": [0.2, 50]}, "sigma", "outside the allowed range"),
        ({"sigma": "wide"}, "sigma", "expected a number"),
        ({"sigma": [3, 1]}, "sigma", "above high"),
        ({"size": 8}, "size", "odd"),
        ({"size": [7.5, 9]}, "size", "whole numbers"),
        ({"cutoff": [0, 1]}, "cutoff", "auto"),
        ({"cutoff": 4}, "cutoff", "outside"),
        ({"beta_plateau": True}, "beta_plateau", "expected a number"),
    ],
)
def test_from_spec_errors_name_step_and_field(spec, field, match):
    with pytest.raises(PipelineError, match=match) as e:
        Blur.from_spec(spec, 4)
    assert f"pipeline step 4 (blur): field '{field}'" in str(e.value)


def test_from_spec_unknown_field():
    with pytest.raises(PipelineError, match=r"pipeline step 1 \(blur\): unknown field\(s\) 'radius'"):
        Blur.from_spec({"radius": 3}, 1)


def test_check_rejects_ranges_without_odd_sizes():
    with pytest.raises(PipelineError, match="field 'size'.*no odd size"):
        Blur(size=Range(8, 8, True)).check(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = batch(4)
    step = Blur(kernel=Choice(ALL, (1.0,) * len(ALL)))
    y_cpu, l_cpu = step(x, gen(9), CTX)
    y_gpu, l_gpu = step(x.cuda(), gen(9), CTX)
    assert y_gpu.device.type == "cuda"
    assert l_cpu == l_gpu
    assert torch.allclose(y_gpu.cpu(), y_cpu, atol=1e-5)


@pytest.mark.parametrize("size, shape", [(51, (2, 3, 64, 80)), (7, (1, 1, 9, 5)), (51, (1, 3, 20, 30))])  # the last: too small to reflect
def test_separable_gaussian_blur_equals_the_2d_kernel(size, shape):
    from esrforge.data.filters import gaussian_blur

    x = torch.rand(shape, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    torch.testing.assert_close(gaussian_blur(x, size, sigma), filter2d(x, gaussian_kernel(size, sigma)), rtol=0, atol=1e-12)
