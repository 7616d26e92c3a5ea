"""The upscaler's CUDA paths: fp16 by default, tiling, real out-of-memory, device memory bounds.

Skipped without a GPU; `scripts/cuda_check.sh` runs them on a GPU machine.
"""

import numpy as np
import pytest
import torch

from esrforge.infer import Upscaler, upscale_image
from esrforge.infer.device import auto_tile, resolve_precision
from esrforge.infer.tiling import DEFAULT_MARGIN, TileRunner, upscale_tiled, working_set_per_px
from esrforge.modelio import LoadedModel
from esrforge.modelio.detect import describe
from tests.conftest import photo_like, tiny_compact, tiny_rrdb
from tests.infer.test_tiling import _NanInHalf, loaded, psnr

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _clean_gpu():
    yield
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


@pytest.mark.parametrize("model", ["rrdb", "compact"])
def test_auto_is_fp16_on_cuda_and_close_to_fp32_on_cpu(model):
    lm = loaded(tiny_rrdb(4) if model == "rrdb" else tiny_compact(4))
    img = photo_like(64, 80)
    up = Upscaler(lm, device="cuda")
    assert resolve_precision(up.precision, up.device) == torch.float16
    out = up.upscale(img)
    assert out.shape == (256, 320, 3) and out.dtype == np.uint8
    assert psnr(out, upscale_image(img, lm, device="cpu", precision="fp32", tile=0)) >= 40
    assert up.fp32_rescues == 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tiled_matches_untiled_on_cuda(precision):
    lm = loaded(tiny_rrdb(4, num_block=3))
    img = photo_like(72, 100)
    whole = upscale_image(img, lm, device="cuda", precision=precision, tile=0)
    tiled = upscale_image(img, lm, device="cuda", precision=precision, tile=32)
    assert psnr(tiled, whole) >= 45.0


def test_16bit_stays_fp32_under_auto_on_cuda():
    lm = loaded(tiny_rrdb(4))
    img = photo_like(32, 40, dtype=np.uint16)
    out = upscale_image(img, lm, device="cuda")
    ref = upscale_image(img, lm, device="cpu", precision="fp32")
    assert out.dtype == np.uint16
    # fp16, or cuDNN's default TF32 for fp32 convs, keeps 10-11 mantissa bits: too few for this.
    assert psnr(out, ref, maxval=65535.0) >= 80


def test_fp16_overflow_on_cuda_is_redone_in_fp32():
    mod = _NanInHalf().eval()
    desc = describe("compact", "compact", dict(in_ch=3, out_ch=3, num_feat=1, num_conv=0, scale=2, activation="relu"), mod, "t")
    up = Upscaler(LoadedModel(mod, desc), device="cuda", precision="fp16", tile=16)
    img = photo_like(20, 30)
    assert np.array_equal(up.upscale(img), img.repeat(2, 0).repeat(2, 1))
    assert up.fp32_rescues >= 1


def _big_compact() -> LoadedModel:
    """Real-ESRGAN's compact width (64 channels), few layers: activations of 256 B per LR pixel."""
    return loaded(tiny_compact(4, num_feat=64, num_conv=4))


def test_real_out_of_memory_halves_the_tile_and_matches():
    lm = _big_compact()
    img = photo_like(1024, 1024).astype(np.float32) / 255
    runner = TileRunner(lm.module, lm.descriptor, CUDA, torch.float32)
    runner(img[:64, :64])  # context, cuDNN handles and weights before the limit
    # A 1024 px tile needs two 268 MB feature maps at once; 400 MB of allocator room cannot hold it.
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + 400e6) / torch.cuda.get_device_properties(0).total_memory))
    out = np.zeros((4096, 4096, 3), np.uint8)
    used = upscale_tiled(runner, img, out, scale=4, tile=1024)
    torch.cuda.set_per_process_memory_fraction(1.0)
    assert used < 1024
    ref = np.zeros_like(out)
    upscale_tiled(runner, img, ref, scale=4, tile=256)
    assert psnr(out, ref) >= 45.0


def test_auto_tile_fits_the_free_memory_without_retrying():
    """With only ~1.5 GB free, `--tile auto` plans a tile that runs first time (no halving)."""
    lm = _big_compact()
    img = photo_like(1536, 1536)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    blocker = torch.empty(int(free - 1.5e9), dtype=torch.uint8, device=CUDA)
    try:
        planned = auto_tile(working_set_per_px(lm.descriptor, 2), CUDA, DEFAULT_MARGIN, lm.descriptor.multiple_of)
        up = Upscaler(lm, device="cuda", precision="fp16")
        out = up.upscale(img)
    finally:
        del blocker
    assert out.shape == (6144, 6144, 3)
    assert 128 <= planned < 1536
    # The size that worked is the one planned (free memory moves by a few MB between the two
    # plans, so allow a step); an out-of-memory retry would have halved it.
    (worked,) = up._tiles.values()
    assert worked > 0.6 * planned, (worked, planned)


def test_device_memory_is_one_tile_not_the_image():
    """Real-ESRGAN's script puts the whole image (and its float output) on the GPU; esrforge does not."""
    lm = _big_compact()
    img = photo_like(2048, 2048)
    up = Upscaler(lm, device="cuda", precision="fp16", tile=256)
    up.upscale(img[:64, :64])  # weights on the device, kernels chosen
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = up.upscale(img)
    peak = torch.cuda.max_memory_allocated() - base
    float_output = out.size * 4  # 805 MB
    assert out.shape == (8192, 8192, 3)
    assert peak < float_output / 8, peak  # one 256 px tile's working set, whatever the image size
