import warnings

import cv2
import numpy as np
import pytest
import torch

from esrforge.data.datasets import DatasetError, SRDataset
from esrforge.data.pipeline import load_pipeline
from esrforge.images import write_image
from tests.conftest import photo_like


def make_pairs(root, n=3, hr=(64, 48), scale=4, c=3, dtype=np.uint8):
    for i in range(n):
        img = photo_like(*hr, c=c, seed=i, dtype=dtype)
        write_image(root / "hr" / f"sub/{i:03d}.png", img)
        # Box-average LR (OpenCV's area resize at an integer factor): it commutes with the flips
        # and rotations, so aligned crops can be checked exactly. MATLAB-style sizes round up.
        lh, lw = -(-hr[0] // scale), -(-hr[1] // scale)
        lr = cv2.resize(img[: hr[0] // scale * scale, : hr[1] // scale * scale], (hr[1] // scale, hr[0] // scale), interpolation=cv2.INTER_AREA)
        lr = cv2.copyMakeBorder(lr, 0, lh - lr.shape[0], 0, lw - lr.shape[1], cv2.BORDER_REPLICATE).reshape(lh, lw, c)
        write_image(root / "lr" / f"sub/{i:03d}.png", lr)


def test_paired_crops_are_aligned_and_sized(tmp_path):
    make_pairs(tmp_path)
    ds = SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=32)
    assert len(ds) == 3
    for i in range(3):
        s = ds[i]
        assert s["hr"].shape == (3, 32, 32) and s["lr"].shape == (3, 8, 8)
        # LR is the box average of HR, so the HR crop pooled must give the LR crop.
        pooled = torch.nn.functional.avg_pool2d(s["hr"][None], 4)[0]
        assert (pooled - s["lr"]).abs().max() <= 1.01 / 255


def test_same_seed_and_epoch_give_same_items_other_epoch_differs(tmp_path):
    make_pairs(tmp_path)
    a = SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16, seed=1)
    b = SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16, seed=1)
    assert torch.equal(a[0]["hr"], b[0]["hr"])
    b.set_epoch(1)
    assert not all(torch.equal(a[i]["hr"], b[i]["hr"]) for i in range(3))


def test_hr_only_generates_lr_and_mixes_with_given_partners(tmp_path):
    make_pairs(tmp_path)
    write_image(tmp_path / "hr" / "extra.png", photo_like(40, 40, seed=9))
    with pytest.warns(UserWarning, match=r"1 of 4 HR image\(s\) have no LR partner in .*lr; their LR is made by the degradation pipeline: .*extra.png"):
        ds = SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], pipeline=load_pipeline("realesrgan"), scale=4, hr_size=32)
    assert len(ds) == 4
    gen = [ds[i] for i in range(4) if ds.samples[i].lr is None]
    assert len(gen) == 1 and gen[0]["lr"].shape == (3, 8, 8) and gen[0]["degradations"]
    only_hr = SRDataset([tmp_path / "hr"], pipeline=load_pipeline("bicubic"), scale=4, hr_size=32)
    assert all(s.lr is None for s in only_hr.samples)


def test_missing_partner_without_pipeline_is_reported(tmp_path):
    make_pairs(tmp_path)
    (tmp_path / "lr" / "sub" / "001.png").unlink()
    with pytest.raises(DatasetError, match=r"1 HR image\(s\) have no LR partner.*001.png"):
        SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16)


def test_wrong_sizes_reported_rounding_accepted(tmp_path):
    make_pairs(tmp_path, hr=(66, 50))  # LR 17x13 (MATLAB rounds up): within rounding, cropped
    ds = SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16)
    assert len(ds) == 3
    write_image(tmp_path / "lr" / "sub" / "002.png", photo_like(10, 10))
    with pytest.raises(DatasetError, match=r"not LR x4.*002.png \(10x10\)"):
        SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16)


def test_unreadable_files_reported_with_paths(tmp_path):
    make_pairs(tmp_path)
    (tmp_path / "hr" / "sub" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"unreadable.*bad.png"):
        SRDataset([tmp_path / "hr"], pipeline=load_pipeline("bicubic"), scale=4, hr_size=16)


def test_small_images_skipped_with_one_warning(tmp_path):
    make_pairs(tmp_path)
    write_image(tmp_path / "hr" / "tiny.png", photo_like(20, 20))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = SRDataset([tmp_path / "hr"], pipeline=load_pipeline("bicubic"), scale=4, hr_size=32)
    assert len(ds) == 3
    msgs = [str(x.message) for x in w if "smaller than hr_size" in str(x.message)]
    assert len(msgs) == 1 and "tiny.png" in msgs[0]


@pytest.mark.parametrize("c,channels,dtype", [(1, 3, np.uint8), (4, 3, np.uint8), (4, 4, np.uint8), (3, 3, np.uint16), (1, 1, np.uint8),
                                             (2, 1, np.uint8), (2, 3, np.uint8), (2, 4, np.uint16)])
def test_gray_rgba_16bit_sources(tmp_path, c, channels, dtype):
    make_pairs(tmp_path, c=c, dtype=dtype)
    ds = SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16, channels=channels)
    s = ds[0]
    assert s["hr"].shape == (channels, 16, 16) and s["lr"].shape == (channels, 4, 4)
    assert s["hr"].dtype == torch.float32 and 0 <= s["hr"].min() and s["hr"].max() <= 1
    if dtype == np.uint16:
        assert (s["hr"] * 65535 % 257 != 0).any()  # real 16-bit values, not 8-bit scaled


def test_hr_size_must_divide_by_scale(tmp_path):
    make_pairs(tmp_path)
    with pytest.raises(DatasetError, match="multiple of scale"):
        SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=30)


def test_dataloader_workers_do_not_change_the_data(tmp_path):
    make_pairs(tmp_path, n=4)
    ds = SRDataset([tmp_path / "hr"], pipeline=load_pipeline("realesrgan"), scale=4, hr_size=32, seed=5)
    one = [b["lr"] for b in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)]
    two = [b["lr"] for b in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_repeat_draws_each_image_several_times_with_different_crops(tmp_path):
    make_pairs(tmp_path, n=2, hr=(96, 96))
    one = SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16, seed=3)
    ds = SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16, seed=3, repeat=5)
    assert len(one) == 2 and len(ds) == 10
    assert torch.equal(ds[1]["hr"], one[1]["hr"])  # the first pass is the unrepeated dataset
    same_image = [ds[i] for i in range(1, 10, 2)]
    assert {s["key"] for s in same_image} == {one[1]["key"]}
    crops = {s["hr"].numpy().tobytes() for s in same_image}
    assert len(crops) == 5
    with pytest.raises(DatasetError, match="repeat must be at least 1"):
        SRDataset([tmp_path / "hr"], lr_roots=[tmp_path / "lr"], scale=4, hr_size=16, repeat=0)


def test_hidden_files_are_not_training_images(tmp_path):
    write_image(tmp_path / "hr" / "a.png", photo_like(32, 32))
    (tmp_path / "hr" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a macOS resource fork
    write_image(tmp_path / "hr" / ".thumbs" / "t.png", photo_like(32, 32))
    ds = SRDataset([tmp_path / "hr"], pipeline=load_pipeline("bicubic"), scale=4, hr_size=16)
    assert [s.key for s in ds.samples] == ["a"]


def test_on_the_fly_degradation_leaves_the_alpha_alone(tmp_path):
    """As `esrforge degrade` does: the colour is degraded, the alpha (a mask) only resized."""
    img = photo_like(32, 32, c=4)
    img[..., 3] = 200
    write_image(tmp_path / "hr" / "a.png", img)
    (tmp_path / "p.yml").write_text("steps: [{type: noise, sigma: 20}]\n")
    ds = SRDataset([tmp_path / "hr"], pipeline=load_pipeline(tmp_path / "p.yml"), scale=2, hr_size=32, channels=4, augment=False)
    item = ds[0]
    alpha = item["lr"][3]
    assert item["lr"].shape == (4, 16, 16) and torch.allclose(alpha, torch.full_like(alpha, 200 / 255), atol=1e-6)
    clean = torch.from_numpy(img[::2, ::2, :3].astype(np.float32) / 255).permute(2, 0, 1)
    assert (item["lr"][:3] - clean).abs().mean() > 0.02  # while the colour did get noise


def test_one_channel_from_colour_is_bt601_luma(tmp_path):
    from esrforge.data.datasets import to_tensor

    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(to_tensor(rgb, 1)[0, 0].numpy(), [0.299, 0.587, 0.114], atol=1e-6)


def test_one_folder_and_a_preset_name_are_accepted_as_such(tmp_path):
    make_pairs(tmp_path)
    ds = SRDataset(str(tmp_path / "hr"), scale=4, hr_size=16, pipeline="bicubic")
    assert len(ds) == 3 and ds[0]["lr"].shape == (3, 4, 4)
    paired = SRDataset(tmp_path / "hr", lr_roots=tmp_path / "lr", scale=4, hr_size=16)
    assert all(s.lr is not None for s in paired.samples)


def test_hflip_augment_only_mirrors_and_generated_lr_is_on_the_files_levels(tmp_path):
    """augment: hflip (Real-ESRGAN) gives the unaugmented crop or its mirror image, never a flip
    upside down or a turn; LR made on the fly is rounded to the HR file's levels, as a saved LR is."""
    for i in range(2):
        write_image(tmp_path / "hr8" / f"{i}.png", photo_like(40, 40, seed=i))
        write_image(tmp_path / "hr16" / f"{i}.png", photo_like(40, 40, seed=i, dtype=np.uint16))
    kw = dict(scale=2, hr_size=16, pipeline="bicubic", seed=4)
    plain = SRDataset(tmp_path / "hr8", augment=False, **kw)
    mirror = SRDataset(tmp_path / "hr8", augment="hflip", **kw)
    full = SRDataset(tmp_path / "hr8", augment=True, **kw)
    flipped = 0
    for i in range(16):
        p, m = plain[i]["hr"], mirror[i]["hr"]
        assert torch.equal(m, p) or torch.equal(m, p.flip(-1)), i
        flipped += not torch.equal(m, p)
    assert 0 < flipped < 16
    assert any(not torch.equal(full[i]["hr"], plain[i]["hr"]) and not torch.equal(full[i]["hr"], plain[i]["hr"].flip(-1)) for i in range(16))
    for ds, levels in ((mirror, 255), (SRDataset(tmp_path / "hr16", **kw), 65535)):
        lr = torch.stack([ds[i]["lr"] for i in range(4)]) * levels
        assert torch.allclose(lr, lr.round(), atol=1e-3 * levels / 255)
    with pytest.raises(DatasetError, match="augment must be true, false or hflip, got 'rot'"):
        SRDataset(tmp_path / "hr8", augment="rot", **kw)
