import pytest
import torch

from esrforge.archs.discriminators import DISCRIMINATORS, build_discriminator


@pytest.mark.parametrize("size", [32, 48, 128])
def test_vgg_style_any_size_and_basicsr_keys(size):
    d = build_discriminator("vgg", num_feat=4)
    assert d(torch.rand(2, 3, size, size)).shape == (2, 1)
    keys = set(d.state_dict())
    assert {"conv0_0.weight", "conv0_0.bias", "conv0_1.weight", "bn0_1.weight", "conv4_1.weight", "bn4_1.running_mean",
            "linear1.weight", "linear2.bias"} <= keys
    assert "conv1_0.bias" not in keys and d.linear1.in_features == 4 * 8 * 16
    with pytest.raises(ValueError, match="at least 32"):
        d(torch.rand(1, 3, 16, 16))


def test_patchgan_and_spectral_norm():
    d = build_discriminator("patchgan", num_feat=4, n_layers=3)
    assert d(torch.rand(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    sn = build_discriminator("patchgan", num_feat=4, n_layers=2, spectral_norm=True)
    keys = set(sn.state_dict())
    assert any(k.endswith("weight_orig") for k in keys) and not any("running_mean" in k for k in keys)


def test_multiscale_returns_one_map_per_scale():
    d = build_discriminator("multiscale_patchgan", num_feat=4, n_layers=2, num_D=3)
    outs = d(torch.rand(1, 3, 64, 64))
    assert len(outs) == 3 and outs[0].shape[-1] > outs[1].shape[-1] > outs[2].shape[-1]


def test_unet_per_pixel_logits_and_realesrgan_keys():
    d = build_discriminator("unet", num_feat=4)
    assert d(torch.rand(2, 3, 32, 40)).shape == (2, 1, 32, 40)
    keys = set(d.state_dict())
    assert {"conv0.weight", "conv1.weight_orig", "conv8.weight_orig", "conv9.weight", "conv9.bias"} <= keys
    with pytest.raises(ValueError, match="multiples of 8"):
        d(torch.rand(1, 3, 30, 32))


def test_registry():
    assert set(DISCRIMINATORS) == {"vgg", "patchgan", "multiscale_patchgan", "unet"}
    with pytest.raises(ValueError, match="allowed: vgg, patchgan"):
        build_discriminator("stylegan")
