"""Noise step: the math of each kind, sampling, determinism, parsing, CPU/GPU agreement."""

from __future__ import annotations

import pytest
import torch

from esrforge.data.noise import KINDS, Noise, gaussian_noise, poisson_noise, salt_pepper_noise, speckle_noise
from esrforge.data.steps import Choice, Context, PipelineError, Range
from tests.conftest import photo_like

CTX = Context(target=(24, 32), scale=1)


def batch(n: int = 4, h: int = 24, w: int = 32, c: int = 3) -> torch.Tensor:
    return torch.stack([torch.from_numpy(photo_like(h, w, c, seed=i)).permute(2, 0, 1) for i in range(n)]).float() / 255


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def only(kind: str, **kw) -> Noise:
    return Noise(kind=Choice((kind,), (1.0,)), **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_shape_range_labels(kind):
    x = batch()
    y, labels = only(kind)(x, gen(0), CTX)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(y, x)
    assert len(labels) == 4 and all(l.startswith(f"noise {kind} ") for l in labels)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_per_seed(kind):
    x = batch()
    step = only(kind, gray_p=0.5)
    a, la = step(x, gen(7), CTX)
    b, lb = step(x, gen(7), CTX)
    c, _ = step(x, gen(8), CTX)
    assert torch.equal(a, b) and la == lb
    assert not torch.equal(a, c)


def test_p0_is_identity():
    x = batch()
    y, labels = Noise(p=0.0)(x, gen(0), CTX)
    assert torch.equal(y, x) and labels == [""] * 4


def test_gaussian_std_matches_sigma_and_gray_shares_channels():
    x = torch.full((2, 3, 64, 64), 0.5)
    sigma = torch.tensor([5.0, 20.0])
    y = gaussian_noise(x, sigma, torch.tensor([False, True]), gen(0))
    std = ((y - x) * 255).flatten(1).std(1)
    assert torch.allclose(std, sigma, rtol=0.05)
    assert torch.equal(y[1, 0], y[1, 1]) and torch.equal(y[1, 0], y[1, 2])  # gray sample
    assert not torch.equal(y[0, 0], y[0, 1])  # colour sample


def test_poisson_counts_distinct_values():
    # Two distinct 8-bit values -> 2 "photons" per unit: the output lands on multiples of 1/2.
    x = torch.zeros(1, 1, 16, 16)
    x[..., ::2, :] = 64 / 255
    x[..., 1::2, :] = 191 / 255
    y = poisson_noise(x, 1.0, False, gen(0))
    assert torch.allclose(y * 2, (y * 2).round(), atol=1e-5)
    assert len(set((y * 2).round().flatten().tolist())) > 1
    # 100 distinct values -> 128: multiples of 1/128.
    x = (torch.arange(100).float().view(1, 1, 10, 10) + 80) / 255
    y = poisson_noise(x, 1.0, False, gen(0))
    assert torch.allclose(y * 128, (y * 128).round(), atol=1e-4)
    assert not torch.allclose(y * 64, (y * 64).round(), atol=1e-2)


def test_poisson_noise_variance_and_scale():
    x = (28 + torch.arange(4096).float().remainder(200).view(1, 1, 64, 64)) / 255  # 200 values -> 256
    y_lo, y_hi = poisson_noise(x, 0.5, False, gen(3)), poisson_noise(x, 2.0, False, gen(3))
    lo, hi = y_lo - x, y_hi - x
    inside = (y_hi > 0) & (y_hi < 1)
    assert float(inside.float().mean()) > 0.95
    assert torch.allclose(hi[inside], 4 * lo[inside], atol=1e-5)  # the same draws, scaled
    std = float((2 * lo).std())  # scale 1
    expected = (float(x.mean()) / 256) ** 0.5  # Var(Poisson(x v) / v) = x / v
    assert abs(std - expected) < 0.1 * expected
    assert abs(float(lo.mean())) < 0.1 * expected  # unbiased


def test_poisson_gray_uses_one_noise_for_all_channels():
    x = batch(2)
    y = poisson_noise(x, 1.0, torch.tensor([True, False]), gen(0))
    n = y - x
    inside = (y[0] > 0).all(0) & (y[0] < 1).all(0)  # away from clamping
    assert torch.allclose(n[0, 0][inside], n[0, 1][inside], atol=1e-6)
    assert not torch.allclose(n[1, 0], n[1, 1], atol=1e-3)


def test_salt_pepper_fraction_and_values():
    x = torch.full((2, 3, 64, 64), 0.5)
    y = salt_pepper_noise(x, torch.tensor([0.1, 0.1]), torch.tensor([False, True]), gen(0))
    hit = y != 0.5
    assert abs(float(hit.float().mean()) - 0.1) < 0.02
    assert set(y[hit].unique().tolist()) == {0.0, 1.0}
    assert abs(float(y[hit].mean()) - 0.5) < 0.1  # salt and pepper in even odds
    assert torch.equal(y[1, 0], y[1, 2])  # gray: whole pixels
    assert not torch.equal(hit[0, 0], hit[0, 1])  # colour: channels independent


def test_speckle_is_multiplicative():
    x = torch.full((1, 3, 64, 64), 0.5)
    x[..., :8] = 0  # black stays black
    y = speckle_noise(x, 0.1, False, gen(0))
    assert torch.equal(y[..., :8], x[..., :8])
    rel = (y[..., 8:] - 0.5) / 0.5
    assert abs(float(rel.std()) - 0.1) < 0.01


def test_gray_p_labels_and_weighted_kinds():
    x = batch(32, 8, 8)
    step = Noise.from_spec({"kind": {"gaussian": 0.5, "poisson": 0.5}, "gray_p": 1.0}, 0)
    _, labels = step(x, gen(0), CTX)
    kinds = {l.split()[1] for l in labels}
    assert kinds == {"gaussian", "poisson"}
    assert all(" gray " in l for l in labels)
    _, labels = Noise(gray_p=0.0)(x, gen(0), CTX)
    assert not any("gray" in l for l in labels)


def test_gray_p_one_makes_gaussian_channels_equal():
    x = torch.full((3, 3, 16, 16), 0.5)
    y, _ = Noise(sigma=Range(10, 10), gray_p=1.0)(x, gen(1), CTX)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])


def test_from_spec_parses_fields():
    spec = {"kind": ["poisson", "speckle"], "sigma": 12, "poisson_scale": [0.1, 1], "gray_p": 0.4, "p": 0.5}
    s = Noise.from_spec(spec, 2)
    assert s.kind.options == ("poisson", "speckle")
    assert s.sigma == Range(12.0, 12.0) and s.poisson_scale == Range(0.1, 1.0)
    assert s.gray_p == 0.4 and s.p == 0.5


@pytest.mark.parametrize(
    "spec, field, words",
    [
        ({"kind": "pink"}, "kind", "unknown 'pink'"),
        ({"kind": {"gaussian": -1}}, "kind", "weights"),
        ({"sigma": [1, 300]}, "sigma", "outside the allowed range"),
        ({"sigma": "loud"}, "sigma", "expected a number"),
        ({"amount": [0.5, 0.1]}, "amount", "above high"),
        ({"gray_p": 1.5}, "gray_p", "outside"),
        ({"gray_p": True}, "gray_p", "expected a number"),
    ],
)
def test_from_spec_errors_name_step_and_field(spec, field, words):
    with pytest.raises(PipelineError) as e:
        Noise.from_spec(spec, 3)
    msg = str(e.value)
    assert f"pipeline step 3 (noise): field '{field}'" in msg and words in msg


def test_from_spec_unknown_field():
    with pytest.raises(PipelineError, match=r"pipeline step 1 \(noise\): unknown field\(s\) 'strength'"):
        Noise.from_spec({"strength": 3}, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = batch(8)
    step = Noise(kind=Choice(KINDS, (1.0, 1.0, 1.0, 1.0)), gray_p=0.5, p=0.8)
    a, la = step(x, gen(5), CTX)
    b, lb = step(x.cuda(), gen(5), CTX)
    assert la == lb
    assert b.device.type == "cuda"
    assert torch.allclose(a, b.cpu(), atol=1e-5)
