import pytest
import torch

from esrforge.archs import ARCHS, RRDBNet, SRVGGNetCompact, build
from esrforge.archs import rrdbnet as rr
from tests.conftest import tiny_compact, tiny_rrdb


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_rrdbnet_output_shape_every_scale(scale):
    m = tiny_rrdb(scale)
    x = torch.rand(1, 3, 16, 20)
    assert m(x).shape == (1, 3, 16 * scale, 20 * scale)


def test_rrdbnet_x1_x2_use_pixel_unshuffle_like_realesrgan():
    assert tiny_rrdb(2).conv_first.in_channels == 12
    assert tiny_rrdb(1).conv_first.in_channels == 48
    assert tiny_rrdb(4).conv_first.in_channels == 3
    old_x2 = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=2, unshuffle=1)
    assert old_x2(torch.rand(1, 3, 5, 7)).shape == (1, 3, 10, 14)


def test_rrdbnet_refuses_unsupported_scale():
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(scale=3)


@pytest.mark.parametrize("act", ["prelu", "relu", "leakyrelu"])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_compact_shapes_and_activations(act, scale):
    m = tiny_compact(scale, activation=act)
    assert m(torch.rand(1, 3, 9, 11)).shape == (1, 3, 9 * scale, 11 * scale)


def test_compact_zero_body_is_nearest_upsampling():
    m = tiny_compact(2)
    for p in m.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(m(x), torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


@pytest.mark.parametrize("scale,unshuffle", [(1, 4), (2, 2), (4, 1), (8, 1), (2, 1), (1, 1)])
def test_layout_conversions_round_trip_and_read_hparams(scale, unshuffle):
    m = RRDBNet(num_feat=8, num_block=3, num_grow_ch=5, scale=scale, unshuffle=unshuffle)
    sd = m.state_dict()
    orig = rr.basicsr_to_original(sd)
    assert "model.0.weight" in orig and "model.1.sub.3.weight" in orig  # trunk conv after 3 blocks
    assert "model.1.sub.0.RDB1.conv1.0.weight" in orig
    back = rr.original_to_basicsr(orig)
    assert back.keys() == sd.keys()
    assert all(back[k] is sd[k] for k in sd)
    assert rr.hparams_from_basicsr(back) == m.hparams()


def test_original_layout_indices_match_the_2018_release_for_x4():
    orig = rr.basicsr_to_original(tiny_rrdb(4).state_dict())
    tops = sorted({int(k.split(".")[1]) for k in orig if k.count(".") == 2})
    assert tops == [0, 3, 6, 8, 10]  # conv_first, upconv1, upconv2, HRconv, conv_last


def test_newarch_names_convert():
    sd = tiny_rrdb(4).state_dict()
    new = {}
    for k, v in sd.items():
        k2 = (
            k.replace("conv_body", "trunk_conv").replace("body.", "RRDB_trunk.").replace(".rdb", ".RDB")
            .replace("conv_up", "upconv").replace("conv_hr", "HRconv")
        )
        new[k2] = v
    assert rr.newarch_to_basicsr(new).keys() == sd.keys()


def test_registry_is_literal_and_builds():
    assert set(ARCHS) == {"rrdbnet", "compact"}
    assert isinstance(build("compact", num_feat=4, num_conv=1, scale=2), SRVGGNetCompact)
    with pytest.raises(ValueError, match="allowed: rrdbnet, compact"):
        build("swinir")
