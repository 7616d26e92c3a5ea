"""`esrforge split`: large training images cut into overlapping sub-images."""

import numpy as np
import pytest

from esrforge.cli import main
from esrforge.data.datasets import SRDataset
from esrforge.data.split import positions
from esrforge.images import ImageMetadata, read_image, read_image_and_metadata, write_image
from tests.conftest import photo_like
from tests.test_images import icc


def test_positions_cover_the_side_as_basicsr_does():
    assert positions(1000, 480, 240) == [0, 240, 480, 520]  # the last one flush with the edge
    assert positions(960, 480, 240) == [0, 240, 480]  # nothing left over
    assert positions(1000, 480, 240, threshold=40) == [0, 240, 480]  # 40 px left: not worth a sub-image
    assert positions(300, 480, 240) == [0]  # shorter than a sub-image: the whole side
    for length in range(16, 200):
        starts = positions(length, 48, 20)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + 48] = True
        assert covered.all() and starts[-1] + min(48, length) == length


def test_split_writes_exact_crops_mirroring_folders(tmp_path):
    a = photo_like(130, 100, seed=1)
    b = photo_like(40, 50, c=4, seed=2, dtype=np.uint16)  # smaller than a sub-image: kept whole, 16-bit RGBA
    write_image(tmp_path / "hr" / "a.png", a, metadata=ImageMetadata(icc_profile=icc()))
    write_image(tmp_path / "hr" / "deep" / "b.png", b)
    assert main(["split", str(tmp_path / "hr"), str(tmp_path / "out"), "--size", "64", "--step", "32", "--workers", "0", "-q"]) == 0
    ys, xs = positions(130, 64, 32), positions(100, 64, 32)
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert names == sorted([f"a_s{n:03d}.png" for n in range(1, len(ys) * len(xs) + 1)] + ["deep/b_s001.png"])
    for n, (y, x) in enumerate(((y, x) for y in ys for x in xs), 1):
        crop, meta = read_image_and_metadata(tmp_path / "out" / f"a_s{n:03d}.png")
        np.testing.assert_array_equal(crop, a[y : y + 64, x : x + 64])
        assert meta.icc_profile == icc()
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "deep" / "b_s001.png"), b)
    # the sub-images are a training set like any other
    assert len(SRDataset(tmp_path / "out", scale=4, hr_size=32, pipeline="bicubic").samples) == len(names)


def test_split_with_lr_cuts_both_sides_at_the_same_places(tmp_path):
    lr = photo_like(37, 29, seed=3)
    hr = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)  # HR that is LR x4 exactly: alignment is checkable
    write_image(tmp_path / "hr" / "p.png", hr)
    write_image(tmp_path / "lr" / "p.png", lr)
    args = ["split", str(tmp_path / "hr"), str(tmp_path / "out"), "--lr", str(tmp_path / "lr"),
            "--lr-output", str(tmp_path / "lr_out"), "--scale", "4", "--size", "64", "--step", "32", "-q", "--workers", "0"]
    assert main(args) == 0
    hr_subs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in hr_subs] == [p.name for p in sorted((tmp_path / "lr_out").glob("*.png"))]
    assert len(hr_subs) == len(positions(37, 16, 8)) * len(positions(29, 16, 8))
    for p in hr_subs:
        h, small = read_image(p), read_image(tmp_path / "lr_out" / p.name)
        assert h.shape == (64, 64, 3) and small.shape == (16, 16, 3)
        np.testing.assert_array_equal(h, np.repeat(np.repeat(small, 4, axis=0), 4, axis=1))


def test_split_refuses_what_would_mix_or_lose_data(tmp_path, capsys):
    write_image(tmp_path / "hr" / "a.png", photo_like(80, 80))
    run = ["split", str(tmp_path / "hr"), "--workers", "0", "-q"]
    assert main([*run, str(tmp_path / "out")]) == 0
    assert main([*run, str(tmp_path / "out")]) == 1  # an earlier split's folder
    assert "already holds images (an earlier split?)" in capsys.readouterr().err
    assert main([*run, str(tmp_path / "hr" / "inside")]) == 1
    assert "must not be an input folder or inside one" in capsys.readouterr().err
    assert main([*run, str(tmp_path / "o2"), "--size", "64", "--step", "100"]) == 1
    assert "1 <= step <= size (a larger step leaves pixels out)" in capsys.readouterr().err
    write_image(tmp_path / "lr" / "a.png", photo_like(30, 20))  # not 80 / 4
    lr = ["--lr", str(tmp_path / "lr"), "--lr-output", str(tmp_path / "lo"), "--scale", "4"]
    assert main([*run, str(tmp_path / "o3"), *lr]) == 1
    assert "a.png (20x30) is not" in capsys.readouterr().err
    assert main([*run, str(tmp_path / "o4"), *lr, "--size", "66", "--step", "32"]) == 1
    assert "must be multiples of --scale 4" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_image_is_reported_and_the_rest_are_cut(tmp_path, capsys, workers):
    write_image(tmp_path / "hr" / "good.png", photo_like(70, 70))
    (tmp_path / "hr" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert main(["split", str(tmp_path / "hr"), str(tmp_path / "out"), "--size", "64", "--step", "32", "--workers", str(workers)]) == 1
    err = capsys.readouterr().err
    assert "bad.png: not a readable image" in err and "wrote 4 sub-image(s) of 64 px" in err
    assert len(list((tmp_path / "out").glob("good_s*.png"))) == 4


def test_threshold_leaves_a_thin_remainder_uncut(tmp_path):
    write_image(tmp_path / "hr" / "a.png", photo_like(100, 100))
    base = ["split", str(tmp_path / "hr"), "--size", "64", "--step", "32", "--workers", "0", "-q"]
    assert main([*base, str(tmp_path / "all")]) == 0  # 0, 32, and 36 flush with the edge: 3 x 3
    assert main([*base, str(tmp_path / "thin"), "--threshold", "4"]) == 0  # the 4 px past 32 + 64 are left
    assert len(list((tmp_path / "all").glob("*.png"))) == 9 and len(list((tmp_path / "thin").glob("*.png"))) == 4
