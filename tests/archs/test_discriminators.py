import pytest
import torch
from torch.nn import functional as F

from esrforge.archs.discriminators import DISCRIMINATORS, VGGStyleDiscriminator, build_discriminator


# BasicSR's VGGStyleDiscriminator keys for num_feat nf (input_size 128, or 256 with a sixth
# stage conv5_0 ... bn5_1): name -> shape
def _basicsr_vgg_shapes(nf: int, in_ch: int = 3, input_size: int = 128) -> dict[str, tuple[int, ...]]:
    chans = [nf, nf * 2, nf * 4, nf * 8, nf * 8] + ([nf * 8] if input_size == 256 else [])
    shapes: dict[str, tuple[int, ...]] = {"conv0_0.weight": (nf, in_ch, 3, 3), "conv0_0.bias": (nf,)}
    prev = in_ch
    for i, c in enumerate(chans):
        if i:
            shapes[f"conv{i}_0.weight"] = (c, prev, 3, 3)
        shapes[f"conv{i}_1.weight"] = (c, c, 4, 4)
        for bn in ([f"bn{i}_0", f"bn{i}_1"] if i else [f"bn{i}_1"]):
            for p in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{bn}.{p}"] = (c,)
            shapes[f"{bn}.num_batches_tracked"] = ()
        prev = c
    shapes |= {"linear1.weight": (100, nf * 8 * 16), "linear1.bias": (100,)}
    shapes |= {"linear2.weight": (1, 100), "linear2.bias": (1,)}
    return shapes


@pytest.mark.parametrize("size", [(32, 32), (40, 72), (128, 128)])
def test_vgg_style_any_size(size):
    d = build_discriminator("vgg", num_feat=4)
    assert d(torch.rand(2, 3, *size)).shape == (2, 1)
    with pytest.raises(ValueError, match="at least 32"):
        d(torch.rand(1, 3, 16, 64))


def test_vgg_style_has_exactly_basicsr_keys_and_loads_strict():
    d = build_discriminator("vgg", num_feat=4)
    got = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    assert got == _basicsr_vgg_shapes(4)
    fresh = VGGStyleDiscriminator(num_feat=4)
    fresh.load_state_dict(d.state_dict(), strict=True)


def test_vgg_style_at_256_has_basicsr_sixth_stage():
    """BasicSR's 256 px discriminator files (input_size: 256) load strict and see 4x4 at the end."""
    d = build_discriminator("vgg", num_feat=4, input_size=256)
    assert {k: tuple(v.shape) for k, v in d.state_dict().items()} == _basicsr_vgg_shapes(4, input_size=256)
    assert d(torch.rand(2, 3, 256, 256)).shape == (2, 1)
    assert build_discriminator("vgg", num_feat=4, input_size=192).stages == 5


@pytest.mark.parametrize("size, last", [(128, "bn4_1"), (256, "bn5_1")])
def test_vgg_style_pool_is_identity_at_basicsr_sizes(size, last):
    d = build_discriminator("vgg", num_feat=4, input_size=size).eval()
    seen = {}
    getattr(d, last).register_forward_hook(lambda m, i, o: seen.__setitem__("bn", o.clone()))
    d.linear1.register_forward_hook(lambda m, i, o: seen.__setitem__("lin_in", i[0]))
    d(torch.rand(2, 3, size, size))
    assert seen["bn"].shape[-2:] == (4, 4)
    # what BasicSR feeds linear1 at 128 px: the activated 4x4 map, flattened
    assert torch.equal(seen["lin_in"], F.leaky_relu(seen["bn"], 0.2).flatten(1))


def test_patchgan_shapes_and_norms():
    d = build_discriminator("patchgan", num_feat=4, n_layers=3)
    # 64 -> 32 -> 16 -> 8 (three stride-2 convs) -> 7 -> 6 (two stride-1 4x4 convs)
    assert d(torch.rand(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    assert d(torch.rand(1, 3, 48, 80)).shape == (1, 1, 4, 8)
    keys = set(d.state_dict())
    assert any("running_mean" in k for k in keys) and not any(k.endswith("weight_orig") for k in keys)
    sn = build_discriminator("patchgan", num_feat=4, n_layers=2, spectral_norm=True)
    keys = set(sn.state_dict())
    assert any(k.endswith("weight_orig") for k in keys) and not any("running_mean" in k for k in keys)
    assert sn(torch.rand(1, 3, 32, 32)).shape == (1, 1, 6, 6)


def test_multiscale_one_map_per_scale_on_halved_inputs():
    d = build_discriminator("multiscale_patchgan", num_feat=4, n_layers=2, num_D=3, spectral_norm=True)
    outs = d(torch.rand(1, 3, 64, 64))
    # inputs 64, 32, 16; two stride-2 convs then two stride-1 4x4 convs: s/4 - 2
    assert isinstance(outs, list) and [o.shape[-1] for o in outs] == [14, 6, 2]
    assert all(o.shape[:2] == (1, 1) for o in outs)
    assert sum(k.endswith("weight_orig") for k in d.state_dict()) == 3 * 4


def test_unet_per_pixel_logits_and_realesrgan_keys():
    d = build_discriminator("unet", num_feat=4)
    for h, w in ((32, 40), (64, 24)):
        assert d(torch.rand(2, 3, h, w)).shape == (2, 1, h, w)
    keys = set(d.state_dict())
    assert {"conv0.weight", "conv0.bias", "conv9.weight", "conv9.bias"} <= keys
    for i in range(1, 9):
        assert {f"conv{i}.weight_orig", f"conv{i}.weight_u", f"conv{i}.weight_v"} <= keys
        assert f"conv{i}.bias" not in keys
    assert tuple(d.state_dict()["conv3.weight_orig"].shape) == (32, 16, 4, 4)
    with pytest.raises(ValueError, match="multiples of 8"):
        d(torch.rand(1, 3, 30, 32))
    no_skip = build_discriminator("unet", num_feat=4, skip_connection=False)
    assert no_skip(torch.rand(1, 3, 16, 16)).shape == (1, 1, 16, 16)


def test_registry():
    assert set(DISCRIMINATORS) == {"vgg", "patchgan", "multiscale_patchgan", "unet"}
    with pytest.raises(ValueError, match="allowed: vgg, patchgan, multiscale_patchgan, unet"):
        build_discriminator("stylegan")
    with pytest.raises(TypeError):
        build_discriminator("vgg", n_layers=3)  # not a VGG-style hyperparameter
