import math
import tracemalloc
import warnings

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from esrforge.infer import Upscaler, upscale_image
from esrforge.infer.device import resolve_precision
from esrforge.infer.tiling import Region, TileRunner, _ieee_fp32_convs, upscale_tiled
from esrforge.infer.upscale import bleed_color
from esrforge.modelio import LoadedModel, from_state_dict
from esrforge.modelio.detect import describe
from tests.conftest import photo_like, tiny_compact, tiny_rrdb


def psnr(a: np.ndarray, b: np.ndarray, maxval: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(maxval**2 / mse)


def loaded(m: nn.Module) -> LoadedModel:
    return from_state_dict(m.state_dict())


@pytest.mark.parametrize("scale", [1, 2])
def test_margin_counts_in_the_networks_own_pixels_for_unshuffle_models(scale):
    """x1/x2 RRDBNets run at 1/4 and 1/2 of the input size (pixel unshuffle), so the same context
    takes 4x and 2x the input pixels. Receptive field here: 17 convs at the network's size, plus
    a few past the upsampling; a margin of 20 of its pixels covers it (max diff 4e-8), 20 input
    pixels does not (8e-6 at x2, 8e-4 at x1). The body's weights are tripled so that far context
    weighs enough to show."""
    m = tiny_rrdb(scale, num_block=1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("body.") and name.endswith("weight"):
                p.mul_(3)
    lm = loaded(m)
    img = photo_like(72, 100).astype(np.float32) / 255
    whole = upscale_image(img, lm, tile=0, precision="fp32")
    tiled = Upscaler(lm, tile=32, margin=20, precision="fp32").upscale(img)
    assert np.abs(tiled - whole).max() < 1e-6


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_tiled_matches_untiled(scale):
    lm = loaded(tiny_rrdb(scale, num_block=3))
    img = photo_like(72, 100)
    whole = upscale_image(img, lm, tile=0, precision="fp32")
    assert whole.shape == (72 * scale, 100 * scale, 3) and whole.dtype == np.uint8
    for tile in (24, 40):
        tiled = upscale_image(img, lm, tile=tile, precision="fp32")
        assert psnr(tiled, whole) >= 45.0, tile


def test_compact_tiles_are_exact_within_its_receptive_field():
    lm = loaded(tiny_compact(4))
    img = photo_like(50, 70)
    whole = upscale_image(img, lm, tile=0, precision="fp32")
    tiled = upscale_image(img, lm, tile=16, precision="fp32")
    assert np.abs(whole.astype(int) - tiled).max() <= 1


def test_odd_sizes_with_pixel_unshuffle_models():
    lm = loaded(tiny_rrdb(1))  # needs multiples of 4 inside; the tiler pads and crops
    img = photo_like(37, 41)
    out = upscale_image(img, lm, tile=16, precision="fp32")
    assert out.shape == (37, 41, 3)
    assert psnr(out, upscale_image(img, lm, tile=0, precision="fp32")) >= 45.0


def test_out_of_memory_halves_the_tile_and_gives_the_same_result():
    lm = loaded(tiny_compact(2))
    runner = TileRunner(lm.module, lm.descriptor, torch.device("cpu"), torch.float32)
    sizes = []

    def flaky(patch):
        sizes.append(max(patch.shape[:2]))
        if max(patch.shape[:2]) > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")  # torch.OutOfMemoryError from 2.5
        return runner(patch)

    img = photo_like(64, 96).astype(np.float32) / 255
    out = np.zeros((128, 192, 3), np.uint8)
    used = upscale_tiled(flaky, img, out, scale=2, tile=64, margin=4)
    assert used < 64 and max(sizes) > 40
    ref = np.zeros_like(out)
    upscale_tiled(runner, img, ref, scale=2, tile=0, margin=4)
    assert np.abs(out.astype(int) - ref).max() <= 1


class _NanInHalf(nn.Module):
    """Stands for a model whose activations overflow in half precision."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        nn.init.dirac_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        y = nn.functional.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")
        if y.dtype in (torch.float16, torch.bfloat16):  # under autocast
            y = y * float("inf")
        return y


def test_half_precision_overflow_is_redone_in_fp32_not_written_black():
    mod = _NanInHalf().eval()
    desc = describe("compact", "compact", dict(in_ch=3, out_ch=3, num_feat=1, num_conv=0, scale=2, activation="relu"), mod, "t")
    up = Upscaler(LoadedModel(mod, desc), device="cpu", precision="bf16", tile=16)
    img = photo_like(20, 30)
    out = up.upscale(img)
    assert np.array_equal(out, img.repeat(2, 0).repeat(2, 1))
    assert up.fp32_rescues >= 1


def test_fp32_on_cuda_turns_tf32_convs_off_and_restores_the_setting():
    """cuDNN's default TF32 keeps 10 mantissa bits; 16-bit images go through real fp32."""
    before = torch.backends.cudnn.allow_tf32
    with _ieee_fp32_convs():
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 == before
    with pytest.raises(RuntimeError), _ieee_fp32_convs():
        raise RuntimeError("a failing tile")
    assert torch.backends.cudnn.allow_tf32 == before


@pytest.mark.parametrize("limit, usage, expect", [
    ("1073741824\n", "268435456\n", 805306368),  # a container with 1 GiB, 256 MiB used
    ("max\n", "268435456\n", None),  # cgroup v2 without a limit
    ("9223372036854771712\n", "5\n", None),  # cgroup v1's "no limit"
])
def test_a_containers_memory_limit_bounds_the_cpu_memory_budget(tmp_path, monkeypatch, limit, usage, expect):
    import esrforge.infer.device as device

    (tmp_path / "max").write_text(limit)
    (tmp_path / "cur").write_text(usage)
    monkeypatch.setattr(device, "CGROUP_FILES", ((str(tmp_path / "nope"), str(tmp_path / "nope2")), (str(tmp_path / "max"), str(tmp_path / "cur"))))
    assert device.cgroup_room_bytes() == expect
    free = device.free_memory_bytes(torch.device("cpu"))
    assert free == expect if expect is not None else free > 0
    if expect is not None:  # and the auto tile shrinks to fit it
        monkeypatch.setattr(device, "CGROUP_FILES", ((str(tmp_path / "max"), str(tmp_path / "cur")),))
        (tmp_path / "max").write_text("300000000\n")
        (tmp_path / "cur").write_text("0\n")
        assert device.auto_tile(20000.0, torch.device("cpu"), margin=16) < 512


def test_cpu_auto_tile_cap_is_in_the_networks_own_pixels(monkeypatch):
    import esrforge.infer.device as device

    monkeypatch.setattr(device, "free_memory_bytes", lambda dev: 1 << 40)
    cpu = torch.device("cpu")
    assert device.auto_tile(1000.0, cpu, margin=16) == 512
    assert device.auto_tile(1000.0, cpu, margin=32, multiple_of=2) == 1024  # x2 unshuffle: 512 of its pixels
    assert device.auto_tile(1000.0, cpu, margin=64, multiple_of=4) == 2048


def test_bf16_close_to_fp32():
    lm = loaded(tiny_rrdb(4))
    img = photo_like(40, 40)
    assert psnr(upscale_image(img, lm, precision="bf16"), upscale_image(img, lm, precision="fp32")) >= 40


def test_auto_precision_rules():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == torch.float16
    assert resolve_precision("auto", cuda, high_bit_depth=True) == torch.float32
    assert resolve_precision("auto", cpu, high_bit_depth=True) == torch.float32
    assert resolve_precision("auto", cpu) in (torch.bfloat16, torch.float32)
    assert resolve_precision("fp16", cpu) == torch.float16
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", cpu)


def test_16bit_keeps_16bit_precision():
    lm = loaded(tiny_compact(2))
    for p in lm.module.parameters():
        nn.init.zeros_(p)  # the model is exactly nearest upsampling
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64, 1).repeat(3, 2)
    out = upscale_image(ramp, lm)
    assert out.dtype == np.uint16
    assert np.array_equal(out, ramp.repeat(2, 0).repeat(2, 1))


def test_gray_in_gray_out_and_float_in_float_out():
    lm = loaded(tiny_rrdb(2))
    gray = photo_like(20, 24, c=1)
    out = upscale_image(gray, lm, precision="fp32")
    assert out.shape == (40, 48, 1)
    assert upscale_image(gray[:, :, 0], lm).shape == (40, 48)
    f = photo_like(20, 24).astype(np.float32) / 255
    outf = upscale_image(f, lm, precision="fp32")
    assert outf.dtype == np.float32 and 0 <= outf.min() and outf.max() <= 1


def test_memory_is_bounded_by_the_output_in_its_own_bit_depth():
    # x4 output of 600x600 is 17 MB as uint8 but 69 MB as float32.
    lm = loaded(tiny_compact(4, num_feat=4, num_conv=1))
    img = photo_like(600, 600)
    tracemalloc.start()
    out = upscale_image(img, lm, tile=128, precision="fp32")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.shape == (2400, 2400, 3)
    assert peak < out.nbytes + 12_000_000, peak  # output + LR float copy (4.3 MB) + one tile


def _blur_model() -> LoadedModel:
    mod = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)
    desc = describe("compact", "compact", dict(in_ch=3, out_ch=3, num_feat=1, num_conv=0, scale=2, activation="relu"), nn.Conv2d(1, 1, 1), "t")
    return LoadedModel(mod, desc)


def test_alpha_kept_without_dark_fringes():
    h = w = 32
    img = np.zeros((h, w, 4), np.uint8)
    img[8:24, 8:24] = (250, 40, 30, 255)  # opaque red square; transparent pixels store black
    out = Upscaler(_blur_model(), precision="fp32").upscale(img)
    assert out.shape == (64, 64, 4)
    visible = out[..., 3] > 0
    # Every visible pixel keeps the red; without colour bleeding the rim would be darkened.
    assert out[visible][:, 0].min() >= 240
    assert out[20:44, 20:44, 3].min() == 255 and out[:10, :10, 3].max() == 0


def test_bleed_color_leaves_visible_pixels_alone():
    rgb = photo_like(16, 16)
    alpha = np.zeros((16, 16, 1), np.uint8)
    alpha[4:10, 4:10] = 128
    filled = bleed_color(rgb, alpha)
    assert np.array_equal(filled[4:10, 4:10], rgb[4:10, 4:10])
    assert filled.dtype == np.uint8


def test_gray_alpha_stays_gray_alpha_each_channel_upscaled_as_gray():
    lm = loaded(tiny_compact(2))
    img = photo_like(12, 14, c=2)
    img[..., 1] = np.where(img[..., 1] > 128, 255, 200)  # no fully transparent pixel: no colour bleeding
    out = upscale_image(img, lm, precision="fp32")
    assert out.shape == (24, 28, 2) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., :1], upscale_image(img[..., :1], lm, precision="fp32"))
    np.testing.assert_array_equal(out[..., 1:], upscale_image(img[..., 1:], lm, precision="fp32"))


@pytest.mark.parametrize("c", [1, 2, 3, 4])
@pytest.mark.parametrize("scale", [1, 2, 4])
def test_every_channel_count_through_tiles_seams_and_outscale(c, scale):
    lm = loaded(tiny_rrdb(scale, num_block=1))
    img = photo_like(17, 23, c=c)
    out = Upscaler(lm, tile=8, seamless="mirror", outscale=scale * 1.5, precision="fp32").upscale(img)
    assert out.shape == (int(17 * scale * 1.5 + 0.5), int(23 * scale * 1.5 + 0.5), c) and out.dtype == np.uint8  # halves round up


def test_opaque_rgba_stays_opaque():
    lm = loaded(tiny_compact(2))
    img = photo_like(12, 12, c=4)
    img[..., 3] = 255
    out = upscale_image(img, lm)
    assert out.shape == (24, 24, 4) and (out[..., 3] == 255).all()


def test_seamless_tile_output_wraps_like_a_mosaic():
    lm = loaded(tiny_rrdb(2, num_block=1))
    img = photo_like(24, 32)
    out = upscale_image(img, lm, precision="fp32", seamless="tile")
    mosaic = upscale_image(np.tile(img, (3, 3, 1)), lm, precision="fp32", tile=0)
    centre = mosaic[48:96, 64:128]
    assert out.shape == (48, 64, 3)
    assert psnr(out, centre) >= 45.0
    plain = upscale_image(img, lm, precision="fp32")
    assert psnr(plain, centre) < psnr(out, centre)


def test_seamless_tile_with_outscale_still_wraps():
    """The resize after the model must continue the texture past the edges too, not reflect."""
    lm = _blur_model()  # x2 bilinear: an output with the photo's texture in it
    img = photo_like(24, 32)
    out = upscale_image(img, lm, precision="fp32", seamless="tile", outscale=3.0)
    assert out.shape == (72, 96, 3)
    # Resizing a 3x3 mosaic of the x2 result and taking its centre is what wrapping means.
    x2 = upscale_image(img, lm, precision="fp32", seamless="tile")
    big = cv2.resize(np.tile(x2, (3, 3, 1)), (3 * 96, 3 * 72), interpolation=cv2.INTER_LANCZOS4)
    centre = big[72:144, 96:192]
    assert np.abs(out.astype(int) - centre).max() <= 2
    # cv2.resize alone clamps at the edges: its border rows differ from the wrapped ones.
    reflected = cv2.resize(x2, (96, 72), interpolation=cv2.INTER_LANCZOS4)
    assert np.abs(reflected[:2].astype(int) - centre[:2]).max() > 2


def test_resize_with_border_past_remaps_size_limit_and_in_blocks():
    """cv2.remap refuses sides of 32767 px or more; the band resampling works in blocks."""
    from esrforge.infer.upscale import resize_with_border

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (30, 33000, 1), dtype=np.uint8)
    out = resize_with_border(wide, (66000, 60), cv2.BORDER_WRAP)
    plain = cv2.resize(wide, (66000, 60), interpolation=cv2.INTER_LANCZOS4).reshape(60, 66000, 1)
    assert out.shape == (60, 66000, 1)
    assert np.array_equal(out[20:-20, 20:-20], plain[20:-20, 20:-20])  # the interior is cv2.resize's
    assert not np.array_equal(out[:, :4], plain[:, :4])  # the edge reads the other side, not a reflection
    small = photo_like(20, 30)
    whole = resize_with_border(small, (75, 50), cv2.BORDER_REFLECT_101, block=2048)
    assert np.array_equal(resize_with_border(small, (75, 50), cv2.BORDER_REFLECT_101, block=7), whole)
    # cv2.resize clamps at the edges, so with BORDER_REPLICATE only remap's 1/32-px grid differs
    same = resize_with_border(small, (75, 50), cv2.BORDER_REPLICATE)
    assert np.abs(same.astype(int) - cv2.resize(small, (75, 50), interpolation=cv2.INTER_LANCZOS4)).max() <= 2


def test_outscale_and_chain():
    a, b = loaded(tiny_rrdb(2, seed=1)), loaded(tiny_compact(2, seed=2))
    img = photo_like(10, 14)
    assert Upscaler([a, b], precision="fp32").upscale(img).shape == (40, 56, 3)
    assert Upscaler(a, outscale=3.0).upscale(img).shape == (30, 42, 3)
    assert Upscaler(a, outscale=0.5).upscale(img).shape == (5, 7, 3)
    # Ties round up on both sides (Python's round() sent 48.5 down and 65.5 up: the aspect bent)
    assert Upscaler(a, outscale=0.5).upscale(photo_like(97, 131)).shape == (49, 66, 3)
    assert Upscaler(a, outscale=1.5).upscale(photo_like(3, 5)).shape == (5, 8, 3)
    assert Upscaler(a, outscale=2.3).upscale(photo_like(100, 10)).shape == (230, 23, 3)  # 229.99999999999997


def test_half_precision_on_a_16bit_image_asked_for_explicitly_says_what_it_costs():
    up = Upscaler(loaded(tiny_compact(2)), precision="bf16", device="cpu")
    img = photo_like(12, 12, dtype=np.uint16)
    with pytest.warns(UserWarning, match="16-bit and float images keep about 8 significant bits in half precision"):
        up.upscale(img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per Upscaler, not once per image of a folder
        up.upscale(img)


def test_bad_arguments_are_refused():
    lm = loaded(tiny_compact(2))
    with pytest.raises(ValueError, match="seamless"):
        Upscaler(lm, seamless="wrap")
    with pytest.raises(ValueError, match="tile"):
        Upscaler(lm, tile=-1)
    with pytest.raises(ValueError, match="device"):
        Upscaler(lm, device="tpu")
    with pytest.raises(ValueError, match="channels"):
        upscale_image(np.zeros((4, 4, 5), np.uint8), lm)


def test_float_input_outside_0_1_or_nan_is_clipped_and_does_not_spread():
    """upscale_image takes float32 in [0, 1]; a NaN sample would reach every output pixel within
    the network's receptive field, and values past 1 would feed the model what it never saw."""
    lm = loaded(tiny_compact(2))
    img = photo_like(20, 24).astype(np.float32) / 255
    bad = img.copy()
    bad[3, 4, 0], bad[10, 10, 2], bad[0, 0, 1] = np.nan, 7.0, -2.0
    with pytest.warns(UserWarning, match="float samples range from -2 to 7; esrforge works in 0..1, so the rest is clipped; 1 NaN"):
        out = upscale_image(bad, lm, tile=0, precision="fp32")
    fixed = bad.copy()
    fixed[3, 4, 0], fixed[10, 10, 2], fixed[0, 0, 1] = 0.0, 1.0, 0.0
    np.testing.assert_array_equal(out, upscale_image(fixed, lm, tile=0, precision="fp32"))
    assert np.isfinite(out).all()


def test_a_module_built_in_code_upscales_as_itself_and_is_left_as_it_was():
    """upscale_image takes an RRDBNet / SRVGGNetCompact module directly (a leakyrelu compact too,
    which a state dict cannot describe), and neither its layout nor its mode is changed."""
    from esrforge.archs import SRVGGNetCompact

    m = SRVGGNetCompact(num_feat=4, num_conv=1, scale=2, activation="leakyrelu").train()
    before = {k: (v.clone(), v.stride()) for k, v in m.state_dict().items()}
    img = photo_like(12, 16)
    out = upscale_image(img, m, precision="fp32", tile=0)
    with torch.no_grad():
        ref = m.eval()(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).clamp(0, 1)
    m.train()
    np.testing.assert_array_equal(out, (ref[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert m.training and all(torch.equal(v, before[k][0]) and v.stride() == before[k][1] for k, v in m.state_dict().items())


def test_wrong_model_and_image_types_are_named():
    img = photo_like(8, 8)
    with pytest.raises(TypeError, match="got a state dict \\(use esrforge.modelio.from_state_dict\\(unwrap\\(sd\\)\\)\\)"):
        upscale_image(img, tiny_compact(2).state_dict())
    with pytest.raises(TypeError, match="a model must be a LoadedModel .* got int"):
        upscale_image(img, 5)
    with pytest.raises(TypeError, match="expected a numpy image \\(H x W or H x W x C\\), got list"):
        upscale_image([[1, 2]], tiny_compact(2))
    with pytest.raises(ValueError, match="tile must be"):
        Upscaler(tiny_compact(2), tile=True)
    assert upscale_image(img, "photo_x4", precision="fp32").shape == (32, 32, 3)  # a bundled name or a path
    assert Upscaler((m for m in [tiny_compact(2), tiny_compact(2)])).scale == 4  # any iterable is a chain


def test_float_input_out_of_range_warns():
    with pytest.warns(UserWarning, match="the image's float samples range from 0 to 254; esrforge works in 0..1"):
        upscale_image(np.linspace(0, 254, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3), tiny_compact(2), precision="fp32")


def test_runners_of_one_model_share_one_copy_of_its_weights(monkeypatch):
    """With `auto`, an 8-bit image runs in bf16 (on a CPU with bf16 units) and a 16-bit one in
    fp32: two runners, one copy of the weights between them, the caller's module untouched."""
    import esrforge.infer.device as device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    m = tiny_compact(2)
    up = Upscaler(m, device="cpu", precision="auto", tile=0)
    up.upscale(photo_like(8, 8))
    up.upscale(photo_like(8, 8, dtype=np.uint16))
    runners = list(up._runners.values())
    assert [r.dtype for r in runners] == [torch.bfloat16, torch.float32]
    assert runners[0].module is runners[1].module and runners[0].module is not m
