import math

import pytest
import torch
from torch import nn

from esrforge.archs.discriminators import build_discriminator
from esrforge.losses.gan import GANLoss
from esrforge.losses.perceptual import VGG19_URL, PerceptualLoss, VGG19Features, load_vgg19_weights
from esrforge.losses.pixel import PixelLoss

# torchvision's vgg19().features conv indices and (in, out) channels
_VGG19_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
                16: (256, 256), 19: (256, 512), 21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512),
                30: (512, 512), 32: (512, 512), 34: (512, 512)}


def _vgg_state(seed=0):
    """A torchvision-layout VGG19 checkpoint with random tensors, built from the expected shapes."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (cin, cout) in _VGG19_CONVS.items():
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.1
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's head: ignored
    return sd


def test_pixel_losses_known_values():
    a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
    assert float(PixelLoss("l1")(a, b)) == pytest.approx(1.0)
    assert float(PixelLoss("mse", weight=2.0)(a, b)) == pytest.approx(3.0)
    assert float(PixelLoss("charbonnier", eps=1e-6)(a, b)) == pytest.approx((1 + 1 + 2 + 1e-3) / 4, rel=1e-5)
    with pytest.raises(ValueError):
        PixelLoss("l3")


def test_charbonnier_is_l1_for_large_errors():
    a, b = torch.zeros(2, 3, 8, 8), torch.randn(2, 3, 8, 8).sign() * (0.5 + torch.rand(2, 3, 8, 8))
    assert float(PixelLoss("charbonnier")(a, b)) == pytest.approx(float(PixelLoss("l1")(a, b)), rel=1e-6)


def test_vgg19_loads_torchvision_layout_from_a_file(tmp_path):
    sd = _vgg_state()
    torch.save(sd, tmp_path / "vgg19.pth")
    feats = VGG19Features(["conv1_2", "conv5_4"], load_vgg19_weights(str(tmp_path / "vgg19.pth")))
    assert torch.equal(feats.features[34].weight, sd["features.34.weight"])
    assert set(feats.state_dict()) == {k for k in sd if k.startswith("features.")}  # no extra buffers
    out = feats(torch.rand(1, 3, 32, 32))
    assert set(out) == {"conv1_2", "conv5_4"}
    assert out["conv1_2"].shape == (1, 64, 32, 32) and out["conv5_4"].shape == (1, 512, 2, 2)
    assert (out["conv5_4"] < 0).any()  # pre-activation: the ReLU after conv5_4 is not applied
    assert not feats.training and not any(p.requires_grad for p in feats.parameters())
    feats.train()
    assert not feats.training


def test_vgg19_stops_at_the_deepest_requested_layer():
    sd = _vgg_state()
    assert len(VGG19Features(["conv1_2"], sd).features) == 3
    assert len(VGG19Features(["relu2_2", "conv1_1"], sd).features) == 9
    assert len(VGG19Features(["conv5_4"], sd).features) == 35
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        VGG19Features(["conv6_1"], sd)


def test_vgg19_refuses_other_layouts():
    sd = _vgg_state()
    bad = dict(sd)
    del bad["features.34.weight"]  # even when conv5_4 is not used: the check is strict
    with pytest.raises(ValueError, match=r"missing features\.34\.weight"):
        VGG19Features(["conv1_1"], bad)
    with pytest.raises(ValueError, match=r"unexpected features\.1\.running_mean"):
        VGG19Features(["conv1_1"], sd | {"features.1.running_mean": torch.zeros(64)})
    with pytest.raises(ValueError, match=r"wrong shape features\.0\.weight"):
        VGG19Features(["conv1_1"], sd | {"features.0.weight": torch.zeros(64, 1, 3, 3)})


def test_missing_vgg_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="vgg_weights: PATH") as e:
        load_vgg19_weights(None)
    msg = str(e.value)
    assert VGG19_URL in msg and str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in msg and "\n" not in msg
    with pytest.raises(FileNotFoundError, match="vgg_weights"):
        PerceptualLoss({"conv5_4": 1.0})


def test_vgg_weights_found_in_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    sd = _vgg_state()
    torch.save(sd, tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")
    assert torch.equal(load_vgg19_weights(None)["features.0.weight"], sd["features.0.weight"])


def test_perceptual_loss_values_and_gradients():
    sd = _vgg_state()
    loss = PerceptualLoss({"conv2_2": 1.0, "conv3_4": 0.5}, weight=2.0, state_dict=sd)
    hr = torch.rand(1, 3, 32, 32)
    assert float(loss(hr, hr)) == 0.0
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    value = loss(sr, hr)
    value.backward()
    value = value.detach()
    assert float(value) > 0 and sr.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.vgg.parameters())
    # weights combine as weight * sum(layer_weight * l1)
    f_sr, f_hr = loss.vgg(sr.detach()), loss.vgg(hr)
    expect = 2.0 * sum(w * (f_sr[n] - f_hr[n]).abs().mean() for n, w in (("conv2_2", 1.0), ("conv3_4", 0.5)))
    assert float(value) == pytest.approx(float(expect), rel=1e-5)
    # after-ReLU variant: convX_Y means reluX_Y, so features are non-negative
    post = PerceptualLoss({"conv2_2": 1.0}, pre_activation=False, criterion="mse", state_dict=sd)
    assert list(post.layer_weights) == ["relu2_2"] and (post.vgg(hr)["relu2_2"] >= 0).all()


def test_gan_losses_known_values():
    z = torch.zeros(4, 1)
    log2 = math.log(2)
    assert float(GANLoss("vanilla").discriminator_loss(z, z)) == pytest.approx(2 * log2)
    assert float(GANLoss("vanilla", weight=0.5).generator_loss(z, z)) == pytest.approx(0.5 * log2)
    assert float(GANLoss("vanilla", weight=0.5).discriminator_loss(z, z)) == pytest.approx(2 * log2)  # unweighted
    # relativistic at zero logits: each half is log 2, averaged
    ra = GANLoss("vanilla", relativistic=True, weight=0.1)
    assert float(ra.discriminator_loss(z, z)) == pytest.approx(log2)
    assert float(ra.generator_loss(z, z)) == pytest.approx(0.1 * log2)
    hinge = GANLoss("hinge")
    assert float(hinge.discriminator_loss(torch.full((4, 1), 1.5), torch.full((4, 1), -1.2))) == 0.0
    assert float(hinge.discriminator_loss(z, z)) == pytest.approx(2.0)
    assert float(hinge.generator_loss(z, torch.full((4, 1), 3.0))) == -3.0
    ls = GANLoss("lsgan")
    assert float(ls.discriminator_loss(torch.ones(4, 1), z)) == 0.0
    assert float(ls.generator_loss(z, z)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        GANLoss("wgan")


@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "hinge"])
def test_relativistic_losses_follow_the_fakes_realism(kind):
    ra = GANLoss(kind, relativistic=True)
    real = torch.randn(8, 1, generator=torch.Generator().manual_seed(1))
    # small shifts: with MSE to 1/0 the relativistic LSGAN is stationary at a mean gap of 0.5
    shifts = (-0.5, 0.0, 0.5)
    g = [float(ra.generator_loss(real, real + s)) for s in shifts]
    d = [float(ra.discriminator_loss(real, real + s)) for s in shifts]
    assert g[0] > g[1] > g[2]  # fakes rated higher than reals: the generator is doing well
    assert d[0] < d[1] < d[2]


def test_gan_gradients_flow_to_the_generator_input():
    torch.manual_seed(0)
    gen = nn.Conv2d(3, 3, 3, 1, 1)
    net_d = build_discriminator("unet", num_feat=4)
    lr, hr = torch.rand(1, 3, 8, 8, requires_grad=True), torch.rand(1, 3, 8, 8)
    net_d.requires_grad_(False)
    for kind in ("vanilla", "lsgan", "hinge"):
        lr.grad, gen.weight.grad = None, None
        loss = GANLoss(kind, relativistic=True, weight=5e-3).generator_loss(net_d(hr), net_d(gen(lr)))
        loss.backward()
        assert lr.grad.abs().sum() > 0 and gen.weight.grad.abs().sum() > 0, kind
    # the discriminator loss reaches D's parameters through both halves
    net_d.requires_grad_(True)
    sr = gen(lr).detach()
    GANLoss("vanilla", relativistic=True).discriminator_loss(net_d(hr), net_d(sr)).backward()
    assert net_d.conv9.weight.grad.abs().sum() > 0


def test_multiscale_lists_are_averaged():
    g = GANLoss("lsgan", weight=2.0)
    r1, f1 = torch.ones(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)
    r2, f2 = torch.full((2, 1, 2, 2), 0.2), torch.full((2, 1, 2, 2), 0.9)
    for fn in (g.discriminator_loss, g.generator_loss):
        both = fn([r1, r2], [f1, f2])
        assert float(both) == pytest.approx((float(fn(r1, f1)) + float(fn(r2, f2))) / 2)
    with pytest.raises(ValueError, match="equally long"):
        g.discriminator_loss([r1, r2], [f1])
    with pytest.raises(ValueError):
        g.generator_loss(r1, [f1])


@pytest.mark.parametrize(
    ("arch", "hp", "hidden"),
    [
        ("vgg", {"num_feat": 4}, 10),  # conv{0..4}_{0,1}
        ("patchgan", {"num_feat": 4, "n_layers": 2}, 3),  # all but the 1-channel output conv
        ("multiscale_patchgan", {"num_feat": 4, "n_layers": 2, "num_D": 2}, 6),
        ("unet", {"num_feat": 4}, 9),  # conv0..conv8; conv9 is the logit head
    ],
)
def test_discriminator_features_are_the_hidden_convs(arch, hp, hidden):
    from esrforge.losses.feature_matching import discriminator_features

    net_d = build_discriminator(arch, **hp).eval()  # eval: spectral norm does no power iteration
    x = torch.rand(2, 3, 32, 32)
    inputs = []
    convs = [m for m in net_d.modules() if isinstance(m, nn.Conv2d) and m.out_channels > 1]
    pre = [m.register_forward_pre_hook(lambda m, a: inputs.append((m, a[0].clone()))) for m in convs]
    with discriminator_features(net_d) as feats:
        net_d(x)
    for h in pre:
        h.remove()
    assert len(feats) == hidden and all(f.shape[0] == 2 and f.shape[1] > 1 for f in feats)
    with torch.no_grad():  # each one is its conv's output, not changed by an in-place activation after it
        assert all(torch.equal(f, m(inp)) for f, (m, inp) in zip(feats, inputs))
    net_d(x)  # hooks are gone after the block: nothing more is collected
    assert len(feats) == hidden


def test_feature_matching_loss_values_and_gradients():
    from esrforge.losses.feature_matching import FeatureMatchingLoss, discriminator_features

    fm = FeatureMatchingLoss(weight=2.0)
    a, b = [torch.zeros(1, 2, 2, 2), torch.ones(1, 3, 1, 1)], [torch.ones(1, 2, 2, 2), torch.ones(1, 3, 1, 1)]
    assert float(fm(a, b)) == pytest.approx(2.0 * (1.0 + 0.0) / 2)  # mean over layers of the mean |a - b|
    with pytest.raises(ValueError, match="same layers"):
        fm(a, b[:1])
    torch.manual_seed(0)
    net_d = build_discriminator("patchgan", num_feat=4, n_layers=2).requires_grad_(False)
    hr = torch.rand(1, 3, 32, 32)
    sr = hr.clone().requires_grad_(True)
    with discriminator_features(net_d) as real:
        net_d(hr)
    with discriminator_features(net_d) as fake:
        net_d(sr)
    assert float(fm(fake, real).detach()) == 0.0  # the same image: nothing to match
    with discriminator_features(net_d) as fake:
        net_d(sr + 0.1 * torch.rand_like(sr))
    loss = fm(fake, real)
    loss.backward()
    assert float(loss) > 0 and sr.grad.abs().sum() > 0


def test_disabled_feature_capture_installs_no_hooks():
    from esrforge.losses.feature_matching import discriminator_features

    net_d = build_discriminator("patchgan", num_feat=4, n_layers=2)
    with discriminator_features(net_d, enabled=False) as feats:
        net_d(torch.rand(1, 3, 32, 32))
        assert feats == [] and not any(m._forward_hooks for m in net_d.modules())


def test_perceptual_loss_runs_vgg_in_fp32_under_mixed_precision_unless_asked():
    """Near convergence SR and HR features differ by little; rounding both to bf16 swamps it."""
    sd = _vgg_state()
    torch.manual_seed(0)
    hr = torch.rand(1, 3, 24, 24)
    sr = (hr + 0.03 * torch.randn_like(hr)).clamp(0, 1)

    def loss_and_grad(loss_fn, amp):
        s = sr.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(s, hr)
        loss.backward()
        return loss.detach(), s.grad

    exact = PerceptualLoss({"conv3_4": 1.0}, state_dict=sd)
    fp32 = loss_and_grad(exact, False)
    in_amp = loss_and_grad(exact, True)
    assert in_amp[0].dtype == torch.float32 and torch.equal(in_amp[0], fp32[0]) and torch.equal(in_amp[1], fp32[1])
    fast = loss_and_grad(PerceptualLoss({"conv3_4": 1.0}, state_dict=sd, autocast=True), True)
    assert not torch.equal(fast[1], fp32[1])  # bf16 VGG19 when asked for
