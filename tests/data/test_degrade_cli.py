import numpy as np
import pytest

from esrforge.cli import main
from esrforge.images import read_image, write_image
from tests.conftest import photo_like


@pytest.fixture
def hr_dir(tmp_path):
    for i, (h, w) in enumerate([(64, 48), (50, 70), (33, 41)]):
        write_image(tmp_path / "hr" / ("deep/" if i == 2 else "") / f"img{i}.png", photo_like(h, w, seed=i))
    write_image(tmp_path / "hr" / "photo.jpg", photo_like(40, 40, seed=7))
    return tmp_path / "hr"


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_degrade_writes_same_names_at_lr_size(tmp_path, hr_dir):
    assert main(["degrade", str(hr_dir), str(tmp_path / "lr"), "--scale", "4", "--workers", "0", "-q"]) == 0
    out = _files(tmp_path / "lr")
    assert set(out) == {"img0.png", "img1.png", "deep/img2.png", "photo.png"}
    assert read_image(tmp_path / "lr" / "img1.png").shape == (12, 17, 3)  # mod-crop, then / 4
    assert read_image(tmp_path / "lr" / "deep" / "img2.png").shape == (8, 10, 3)


def test_degrade_keeps_gray_alpha_with_alpha_resized_not_degraded(tmp_path):
    img = photo_like(32, 40, c=2)
    img[..., 1] = 255
    img[:16, :, 1] = 0
    write_image(tmp_path / "hr" / "la.png", img)
    assert main(["degrade", str(tmp_path / "hr"), str(tmp_path / "lr"), "--scale", "2", "--pipeline", "realesrgan", "--workers", "0", "-q"]) == 0
    lr = read_image(tmp_path / "lr" / "la.png")
    assert lr.shape == (16, 20, 2)
    assert (lr[:7, :, 1] == 0).all() and (lr[9:, :, 1] == 255).all()


def test_degrade_is_deterministic_across_worker_counts(tmp_path, hr_dir):
    args = ["--scale", "2", "--pipeline", "realesrgan", "--seed", "11", "-q"]
    assert main(["degrade", str(hr_dir), str(tmp_path / "a"), "--workers", "0", *args]) == 0
    assert main(["degrade", str(hr_dir), str(tmp_path / "b"), "--workers", "2", *args]) == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert main(["degrade", str(hr_dir), str(tmp_path / "c"), "--workers", "0", "--scale", "2", "--pipeline", "realesrgan", "--seed", "12", "-q"]) == 0
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_degrade_refuses_writing_into_the_hr_folder(tmp_path, hr_dir, capsys):
    before = _files(hr_dir)
    assert main(["degrade", str(hr_dir), str(hr_dir / "lr"), "-q"]) == 1
    assert "must not be the HR folder" in capsys.readouterr().err
    assert _files(hr_dir) == before


def test_degrade_reports_bad_pipeline(tmp_path, hr_dir, capsys):
    assert main(["degrade", str(hr_dir), str(tmp_path / "lr"), "--pipeline", "nonesuch", "-q"]) == 1
    assert "neither a preset" in capsys.readouterr().err


def test_preview_sheet(tmp_path, hr_dir):
    sheet = tmp_path / "sheet.png"
    assert main(["degrade", "--preview", str(hr_dir / "img0.png"), "--pipeline", "realesrgan", "-o", str(sheet), "--count", "3", "-q"]) == 0
    img = read_image(sheet)
    # HR + 3 draws in one row of 4 tiles, each 48 px wide, captions below the 64 px tiles.
    assert img.shape[1] == 4 * 48 and img.shape[0] > 64
    tiles = [img[:64, i * 48 : (i + 1) * 48].astype(int) for i in range(4)]
    assert np.array_equal(tiles[0], photo_like(64, 48, seed=0))
    assert not np.array_equal(tiles[1], tiles[2])  # different random draws
    captions = img[64:, 48:96]
    assert (captions < 128).any()  # text was drawn


def test_preview_needs_output(tmp_path, hr_dir, capsys):
    assert main(["degrade", "--preview", str(hr_dir / "img0.png"), "-q"]) == 1
    assert "-o" in capsys.readouterr().err


def test_preview_of_a_gray_image_draws_gray_degradations(tmp_path):
    """The sheet shows what a run writes: gray stays gray (colour noise was drawn on RGB before)."""
    write_image(tmp_path / "g.png", photo_like(32, 32, c=1))
    (tmp_path / "noise.yml").write_text("steps: [{type: noise, sigma: 30, gray_p: 0}]\n")
    sheet = tmp_path / "sheet.png"
    assert main(["degrade", "--preview", str(tmp_path / "g.png"), "--pipeline", str(tmp_path / "noise.yml"),
                 "--scale", "1", "-o", str(sheet), "--count", "2", "-q"]) == 0
    tiles = read_image(sheet)[:32].astype(int)
    assert (tiles[..., 0] == tiles[..., 1]).all() and (tiles[..., 1] == tiles[..., 2]).all()
    assert tiles[:, 32:64].std() > 0 and not np.array_equal(tiles[:, :32], tiles[:, 32:64])


def test_float_tiff_degrades_to_float(tmp_path):
    hr = photo_like(32, 40).astype(np.float32) / 255
    write_image(tmp_path / "hr" / "f.tiff", hr)
    assert main(["degrade", str(tmp_path / "hr"), str(tmp_path / "lr"), "--scale", "2", "--workers", "0", "-q"]) == 0
    lr = read_image(tmp_path / "lr" / "f.png")
    assert lr.shape == (16, 20, 3) and lr.dtype == np.uint8  # written as PNG, 8-bit
    assert 30 < lr.std() and len(np.unique(lr)) > 50  # a picture, not values rounded to 0 or 1


def test_too_small_images_name_their_size_and_count_must_be_positive(tmp_path, capsys):
    write_image(tmp_path / "hr" / "tiny.png", photo_like(3, 3))
    write_image(tmp_path / "hr" / "ok.png", photo_like(16, 16))
    assert main(["degrade", str(tmp_path / "hr"), str(tmp_path / "lr"), "--scale", "4", "--workers", "0", "-q"]) == 1
    assert f"error: {tmp_path / 'hr' / 'tiny.png'}: HR size 3x3 is smaller than the scale 4" in capsys.readouterr().err
    assert main(["degrade", "--preview", str(tmp_path / "hr" / "ok.png"), "-o", str(tmp_path / "s.png"), "--count", "0"]) == 1
    assert "--count must be >= 1, got 0" in capsys.readouterr().err


def test_lr_files_the_run_did_not_write_are_named(tmp_path, hr_dir, capsys):
    lr = tmp_path / "lr"
    assert main(["degrade", str(hr_dir), str(lr), "--workers", "0", "-q"]) == 0
    (hr_dir / "img0.png").unlink()  # the HR set changed; its old LR file stays behind
    capsys.readouterr()
    assert main(["degrade", str(hr_dir), str(lr), "--workers", "0", "-q"]) == 0
    err = capsys.readouterr().err
    assert f"esrforge degrade: warning: {lr}: 1 LR file(s) were not written by this run (an earlier run's?): {lr / 'img0.png'}" in err


def test_the_stale_file_check_never_hides_the_run_s_own_errors(tmp_path, capsys):
    write_image(tmp_path / "hr" / "a.png", photo_like(16, 16))
    (tmp_path / "hr" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_image(tmp_path / "lr" / "a.jpg", photo_like(4, 4))  # an earlier run's a.jpg beside the new a.png
    assert main(["degrade", str(tmp_path / "hr"), str(tmp_path / "lr"), "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'hr' / 'c.png'}" in err and "wrote 1 LR image(s)" in err
    assert f"1 LR file(s) were not written by this run (an earlier run's?): {tmp_path / 'lr' / 'a.jpg'}" in err
    (tmp_path / "hr" / "a.png").unlink()  # now every image fails: the LR folder is never made
    assert main(["degrade", str(tmp_path / "hr"), str(tmp_path / "lr2"), "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'hr' / 'c.png'}" in err and "no such folder" not in err


def test_degrade_keeps_the_hr_colour_profile(tmp_path):
    from esrforge.images import ImageMetadata, read_image_and_metadata
    from tests.test_images import icc

    write_image(tmp_path / "hr" / "p3.png", photo_like(32, 32), metadata=ImageMetadata(icc_profile=icc(extra=500)))
    assert main(["degrade", str(tmp_path / "hr"), str(tmp_path / "lr"), "--scale", "2", "--workers", "0", "-q"]) == 0
    assert read_image_and_metadata(tmp_path / "lr" / "p3.png")[1].icc_profile == icc(extra=500)


def test_lr_files_already_there_are_kept_unless_overwrite(tmp_path, hr_dir, capsys):
    """An LR folder may hold hand-made or real LR images: a second run must not replace them unasked."""
    lr = tmp_path / "lr"
    assert main(["degrade", str(hr_dir), str(lr), "--workers", "0", "-q"]) == 0
    names = sorted(_files(lr))
    mine = lr / names[0]
    mine.write_bytes(b"my own LR image")  # not even an image: it is not read, only kept
    first = (lr / names[1]).read_bytes()
    capsys.readouterr()
    assert main(["degrade", str(hr_dir), str(lr), "--workers", "0", "--pipeline", "realesrgan"]) == 0
    assert mine.read_bytes() == b"my own LR image" and (lr / names[1]).read_bytes() == first
    assert f"kept {len(names)} already there (--overwrite to redo them)" in capsys.readouterr().err
    assert main(["degrade", str(hr_dir), str(lr), "--workers", "0", "--overwrite", "-q"]) == 0
    assert mine.read_bytes() != b"my own LR image" and (lr / names[1]).read_bytes() == first  # same seed, same LR
