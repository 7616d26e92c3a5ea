import math

import pytest
import torch

from esrforge.losses.gan import GANLoss
from esrforge.losses.perceptual import VGG19_URL, PerceptualLoss, VGG19Features, load_vgg19_weights, vgg19_layers
from esrforge.losses.pixel import PixelLoss


def test_pixel_losses_known_values():
    a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
    assert float(PixelLoss("l1")(a, b)) == pytest.approx(1.0)
    assert float(PixelLoss("mse", weight=2.0)(a, b)) == pytest.approx(3.0)
    assert float(PixelLoss("charbonnier", eps=1e-6)(a, b)) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError):
        PixelLoss("l3")


def _vgg_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    seq, _ = vgg19_layers()
    sd = {}
    for i, m in enumerate(seq):
        if isinstance(m, torch.nn.Conv2d):
            sd[f"features.{i}.weight"] = torch.randn(m.weight.shape, generator=g) * 0.05
            sd[f"features.{i}.bias"] = torch.zeros(m.out_channels)
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    return sd


def test_vgg19_loads_torchvision_layout_and_stops_early(tmp_path):
    sd = _vgg_state()
    assert "features.34.weight" in sd and sd["features.0.weight"].shape == (64, 3, 3, 3)
    torch.save(sd, tmp_path / "vgg19.pth")
    feats = VGG19Features(["conv1_2", "conv5_4"], load_vgg19_weights(tmp_path / "vgg19.pth"))
    out = feats(torch.rand(1, 3, 32, 32))
    assert out["conv1_2"].shape[1] == 64 and out["conv5_4"].shape[1] == 512
    shallow = VGG19Features(["relu2_2"], sd)
    assert len(shallow.features) == 9  # nothing past the deepest requested layer
    # pre-activation: conv outputs keep their negative values
    assert (out["conv5_4"] < 0).any()
    bad = dict(sd)
    del bad["features.10.weight"]
    with pytest.raises(ValueError, match="features.10.weight"):
        VGG19Features(["conv3_1"], bad)


def test_missing_vgg_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="vgg_weights") as e:
        load_vgg19_weights(None)
    assert VGG19_URL in str(e.value)


def test_perceptual_loss_zero_for_equal_and_gradients_flow():
    loss = PerceptualLoss({"conv3_4": 1.0, "conv5_4": 0.5}, state_dict=_vgg_state())
    hr = torch.rand(1, 3, 32, 32)
    assert float(loss(hr, hr)) == 0.0
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    l = loss(sr, hr)
    l.backward()
    assert float(l.detach()) > 0 and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.vgg.parameters())


def test_gan_losses_known_values():
    z = torch.zeros(4, 1)
    assert float(GANLoss("vanilla").discriminator_loss(z, z)) == pytest.approx(2 * math.log(2))
    assert float(GANLoss("vanilla", weight=0.5).generator_loss(z, z)) == pytest.approx(0.5 * math.log(2))
    hinge = GANLoss("hinge")
    assert float(hinge.discriminator_loss(torch.full((4, 1), 2.0), torch.full((4, 1), -2.0))) == 0.0
    assert float(hinge.generator_loss(z, torch.full((4, 1), 3.0))) == -3.0
    assert float(GANLoss("lsgan").discriminator_loss(torch.ones(4, 1), z)) == 0.0


def test_relativistic_generator_loss_falls_as_fakes_look_more_real():
    ra = GANLoss("vanilla", relativistic=True)
    real = torch.randn(8, 1)
    losses = [float(ra.generator_loss(real, real + shift)) for shift in (-2.0, 0.0, 2.0)]
    assert losses[0] > losses[1] > losses[2]
    d = [float(ra.discriminator_loss(real, real + shift)) for shift in (-2.0, 0.0, 2.0)]
    assert d[0] < d[1] < d[2]
    fake = torch.randn(8, 1, requires_grad=True)
    ra.generator_loss(real, fake).backward()
    assert fake.grad.abs().sum() > 0


def test_multiscale_lists_are_averaged():
    g = GANLoss("lsgan")
    one = g.discriminator_loss(torch.ones(2, 1), torch.zeros(2, 1) + 0.5)
    two = g.discriminator_loss([torch.ones(2, 1), torch.ones(2, 1)], [torch.zeros(2, 1) + 0.5, torch.zeros(2, 1) + 0.5])
    assert float(one) == pytest.approx(float(two))
