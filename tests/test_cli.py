"""The `esrforge` command, driven in-process through cli.main (and once as `python -m esrforge`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import esrforge
from esrforge.cli import main
from esrforge.images import read_image, write_image
from tests.conftest import photo_like, tiny_compact, tiny_rrdb

H, W = 24, 32

# --- helpers ------------------------------------------------------------------------------------


def save(module: torch.nn.Module, path: Path) -> Path:
    torch.save({"params_ema": module.state_dict()}, path)
    return path


def nearest_compact(scale: int = 4, **kw) -> torch.nn.Module:
    """A compact model whose residual branch is zeroed: it computes exactly a nearest upscale.

    Random weights say nothing about values; this one makes every output pixel predictable.
    """
    m = tiny_compact(scale, **kw)
    with torch.no_grad():
        m.body[-1].weight.zero_()
        m.body[-1].bias.zero_()
    return m


def nearest(img: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(img, s, axis=0), s, axis=1)


def upscale(*args) -> int:
    """`esrforge upscale ... --precision fp32 -q`: deterministic and silent unless something fails."""
    return main(["upscale", *map(str, args), "--precision", "fp32", "-q"])


def cli(*args) -> int:
    return main([str(a) for a in args])


def image(path: Path, img: np.ndarray | None = None, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, photo_like(H, W, seed=seed) if img is None else img)
    return path


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def near4(tmp_path: Path) -> Path:
    return save(nearest_compact(4), tmp_path / "near_x4.pth")


# --- entry points -------------------------------------------------------------------------------


def test_python_dash_m_esrforge_version() -> None:
    r = subprocess.run([sys.executable, "-m", "esrforge", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"esrforge {esrforge.__version__}"


def test_no_command_lists_the_commands(capsys) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage" in err and all(c in err for c in ("upscale", "train", "degrade", "metrics", "info", "convert"))


# --- upscale: inputs and outputs ----------------------------------------------------------------


def test_single_file_to_named_output(tmp_path: Path, rrdb_file: Path) -> None:
    src = image(tmp_path / "in.png")
    dst = tmp_path / "new" / "folder" / "big.png"  # parent folders are created
    assert upscale(src, "-o", dst, "-m", rrdb_file) == 0
    out = read_image(dst)
    assert out.shape == (H * 4, W * 4, 3) and out.dtype == np.uint8
    # The command gives exactly what the library gives for the same model and settings.
    ref = esrforge.upscale_image(read_image(src), esrforge.load_model(rrdb_file), precision="fp32")
    np.testing.assert_array_equal(out, ref)
    assert files_under(tmp_path / "new") == ["folder/big.png"]  # no temporary files left


def test_folder_input_mirrors_tree_with_suffix_and_format(tmp_path: Path, near4: Path) -> None:
    src = tmp_path / "in"
    a = image(src / "a.png", seed=1)
    b = image(src / "sub" / "b.jpg", seed=2)
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4, "--suffix", "_x4", "--format", "png") == 0
    assert files_under(out) == ["a_x4.png", "sub/b_x4.png"]
    np.testing.assert_array_equal(read_image(out / "a_x4.png"), nearest(read_image(a), 4))
    np.testing.assert_array_equal(read_image(out / "sub" / "b_x4.png"), nearest(read_image(b), 4))


def test_format_same_keeps_each_extension(tmp_path: Path, near4: Path) -> None:
    src = tmp_path / "in"
    image(src / "a.png")
    image(src / "b.jpg")
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4) == 0
    assert files_under(out) == ["a.png", "b.jpg"]
    assert (out / "b.jpg").read_bytes()[:2] == b"\xff\xd8"  # really a JPEG


def test_quality_sets_jpeg_and_webp_quality(tmp_path: Path, near4: Path, capsys) -> None:
    src = image(tmp_path / "in.png")
    for q in ("30", "95"):
        for fmt in ("jpg", "webp"):
            assert upscale(src, "-o", tmp_path / f"q{q}.{fmt}", "-m", near4, "--quality", q) == 0
    for fmt in ("jpg", "webp"):
        assert (tmp_path / f"q30.{fmt}").stat().st_size < 0.7 * (tmp_path / f"q95.{fmt}").stat().st_size
    with pytest.raises(SystemExit) as exc:
        upscale(src, "-o", tmp_path / "bad.jpg", "-m", near4, "--quality", "0")
    assert exc.value.code == 2 and "--quality must be a whole number from 1 to 100" in capsys.readouterr().err


def test_lossless_webp_stays_lossless_and_lossless_asks_for_it(tmp_path: Path, near4: Path, capsys) -> None:
    from esrforge.images import webp_is_lossless

    img = photo_like(H, W)
    src = tmp_path / "in.webp"
    write_image(src, img, lossless=True)
    assert webp_is_lossless(src) and np.array_equal(read_image(src), img)
    assert upscale(src, "-o", tmp_path / "same.webp", "-m", near4) == 0  # a lossless input stays lossless
    assert webp_is_lossless(tmp_path / "same.webp")
    np.testing.assert_array_equal(read_image(tmp_path / "same.webp"), nearest(img, 4))
    assert upscale(src, "-o", tmp_path / "lossy.webp", "-m", near4, "--quality", "90") == 0  # asked for lossy
    assert not webp_is_lossless(tmp_path / "lossy.webp")
    png = image(tmp_path / "in.png", img)
    assert upscale(png, "-o", tmp_path / "from_png.webp", "-m", near4) == 0
    assert not webp_is_lossless(tmp_path / "from_png.webp")
    assert upscale(png, "-o", tmp_path / "asked.webp", "-m", near4, "--lossless") == 0
    assert webp_is_lossless(tmp_path / "asked.webp")
    np.testing.assert_array_equal(read_image(tmp_path / "asked.webp"), nearest(img, 4))
    assert upscale(png, "-o", tmp_path / "x.jpg", "-m", near4, "--lossless") == 1
    assert "--lossless: JPEG has no lossless mode" in capsys.readouterr().err


def test_colour_profile_of_the_input_is_carried_to_the_output(tmp_path: Path, near4: Path, capsys) -> None:
    from esrforge.images import ImageMetadata, read_image_and_metadata
    from tests.test_images import icc

    p3 = icc(extra=1000)  # a wide-gamut photo's numbers mean other colours than sRGB's
    img = photo_like(H, W)
    write_image(tmp_path / "in.jpg", img, metadata=ImageMetadata(icc_profile=p3))
    write_image(tmp_path / "plain.png", img)
    for fmt in ("png", "jpg", "webp", "tiff"):
        assert upscale(tmp_path / "in.jpg", "-o", tmp_path / f"out.{fmt}", "-m", near4) == 0
        assert read_image_and_metadata(tmp_path / f"out.{fmt}")[1].icc_profile == p3
    assert upscale(tmp_path / "plain.png", "-o", tmp_path / "plain_out.png", "-m", near4) == 0
    assert read_image_and_metadata(tmp_path / "plain_out.png")[1].icc_profile is None  # none is made up
    pil = pytest.importorskip("PIL.Image")  # a print shop's CMYK JPEG: read as RGB, which its profile cannot describe
    pil.fromarray(img).convert("CMYK").save(tmp_path / "cmyk.jpg", icc_profile=icc(b"CMYK"))
    capsys.readouterr()
    assert main(["upscale", str(tmp_path / "cmyk.jpg"), "-o", str(tmp_path / "cmyk.png"), "-m", str(near4), "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "cmyk.png: written without the CMYK colour profile, which does not describe RGB images" in err
    assert read_image_and_metadata(tmp_path / "cmyk.png")[1].icc_profile is None and read_image(tmp_path / "cmyk.png").shape == (4 * H, 4 * W, 3)


def test_exif_is_kept_and_strip_metadata_drops_all_but_the_colour_profile(tmp_path: Path, near4: Path) -> None:
    from esrforge.images import ImageMetadata, _exif_upright, read_image_and_metadata
    from tests.test_images import camera_jpeg, icc

    camera_jpeg(tmp_path / "cam.jpg", photo_like(H, W))
    exif = read_image_and_metadata(tmp_path / "cam.jpg")[1].exif
    img = read_image(tmp_path / "cam.jpg")
    write_image(tmp_path / "in.jpg", img, metadata=ImageMetadata(icc_profile=icc(), exif=exif))
    assert upscale(tmp_path / "in.jpg", "-o", tmp_path / "kept.jpg", "-m", near4) == 0
    kept = read_image_and_metadata(tmp_path / "kept.jpg")[1]
    assert kept.icc_profile == icc() and kept.exif is not None and b"2020:01:02 03:04:05" in kept.exif
    assert upscale(tmp_path / "in.jpg", "-o", tmp_path / "stripped.jpg", "-m", near4, "--strip-metadata") == 0
    assert read_image_and_metadata(tmp_path / "stripped.jpg")[1] == ImageMetadata(icc_profile=icc())
    assert _exif_upright(exif) == exif  # orientation 1 stays as it was


def test_glob_input(tmp_path: Path, near4: Path) -> None:
    src = tmp_path / "in"
    for name in ("a.png", "b.png", "c.jpg"):
        image(src / name)
    out = tmp_path / "out"
    assert upscale(str(src / "*.png"), "-o", out, "-m", near4) == 0
    assert files_under(out) == ["a.png", "b.png"]
    assert read_image(out / "b.png").shape == (H * 4, W * 4, 3)


def test_recursive_glob_mirrors_the_tree_below_its_fixed_part(tmp_path: Path, near4: Path) -> None:
    src = tmp_path / "in"
    for name in ("a/x.png", "b/x.png", "b/deep/y.png", "top.png"):
        image(src / name)
    out = tmp_path / "out"
    assert upscale(str(src / "**" / "*.png"), "-o", out, "-m", near4) == 0
    assert files_under(out) == ["a/x.png", "b/deep/y.png", "b/x.png", "top.png"]
    # A pattern that matches folders takes their images, as the shell-expanded list would.
    out2 = tmp_path / "out2"
    assert upscale(str(src / "*"), "-o", out2, "-m", near4) == 0
    assert files_under(out2) == files_under(out)


def test_hidden_files_in_folders_are_not_inputs(tmp_path: Path, near4: Path) -> None:
    """macOS `._x.png` forks and a killed write's `.x.png.1234.partial.png` are not images to upscale."""
    src = tmp_path / "in"
    image(src / "a.png")
    (src / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    image(src / ".b.png.1234.partial.png")
    image(src / ".cache" / "c.png")
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4) == 0
    assert files_under(out) == ["a.png"]


def test_symlinked_folders_are_followed_once(tmp_path: Path, near4: Path) -> None:
    """Datasets and photo folders are often assembled from links; a link back up must not loop."""
    elsewhere = tmp_path / "elsewhere"
    image(elsewhere / "b.png", seed=1)
    src = tmp_path / "in"
    image(src / "a.png")
    (src / "linked").symlink_to(elsewhere, target_is_directory=True)
    (src / "loop").symlink_to(src, target_is_directory=True)
    (src / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (src / "a_link").symlink_to(src / "z_real", target_is_directory=True)  # listed before the folder it names
    image(src / "z_real" / "c.png", seed=2)
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4) == 0
    assert files_under(out) == ["a.png", "linked/b.png", "z_real/c.png"]
    (tmp_path / "via").symlink_to(src, target_is_directory=True)  # the input itself reached through a link
    assert upscale(tmp_path / "via", "-o", tmp_path / "out2", "-m", near4) == 0
    assert files_under(tmp_path / "out2") == ["a.png", "linked/b.png", "z_real/c.png"]


def test_two_inputs_onto_one_output_are_refused_before_anything_runs(tmp_path: Path, near4: Path, capsys) -> None:
    a, b = image(tmp_path / "one" / "x.png"), image(tmp_path / "two" / "x.png")
    out = tmp_path / "out"
    assert upscale(tmp_path / "one", tmp_path / "two", "-o", out, "-m", near4) == 1
    assert f"{out / 'x.png'} would be written from both {a} and {b}" in capsys.readouterr().err
    assert not out.exists()
    # png and jpg of one name, both written as png
    image(tmp_path / "mix" / "p.png"), image(tmp_path / "mix" / "p.jpg")
    assert upscale(tmp_path / "mix", "-o", out, "-m", near4, "--format", "png") == 1
    err = capsys.readouterr().err
    assert "would be written from both" in err and "they differ only in extension: leave out --format" in err and not out.exists()


def test_an_image_named_twice_is_upscaled_once(tmp_path: Path, near4: Path, capsys) -> None:
    src = image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert cli("upscale", tmp_path / "in", src, "-o", out, "-m", near4, "--precision", "fp32") == 0
    # with the time it took; nothing about skipped or failed images when there were none
    assert re.search(r"^upscaled 1 in \d+\.\d s$", capsys.readouterr().err, re.M)
    assert files_under(out) == ["a.png"]


def test_missing_input_is_an_error(tmp_path: Path, near4: Path, capsys) -> None:
    missing = tmp_path / "nope.png"
    assert upscale(missing, "-o", tmp_path / "out", "-m", near4) == 1
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _existing_output(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """An input folder with a.png and an output folder already holding an a.png sentinel."""
    image(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    image(out / "a.png", np.full((2, 2, 3), 7, np.uint8))  # obviously not an upscaled image
    os.utime(out / "a.png", ns=(1_000_000_000, 1_000_000_000))
    return tmp_path / "in", out, (out / "a.png").read_bytes()


def test_skip_existing_is_the_default(tmp_path: Path, near4: Path) -> None:
    src, out, before = _existing_output(tmp_path)
    assert upscale(src, "-o", out, "-m", near4) == 0
    assert (out / "a.png").read_bytes() == before
    assert (out / "a.png").stat().st_mtime_ns == 1_000_000_000


def test_an_output_file_named_by_o_is_replaced_unless_skip_existing(tmp_path: Path, near4: Path, capsys) -> None:
    """`upscale photo.png -o big.png -m other_model` again must not keep the first model's output
    and say 'skipped' (as a folder run resuming would): the user named the file to get."""
    src = image(tmp_path / "a.png", seed=1)
    out = tmp_path / "big.png"
    out.write_bytes(b"an earlier result")
    assert upscale(src, "-o", out, "-m", near4, "--skip-existing") == 0
    assert out.read_bytes() == b"an earlier result"
    assert upscale(src, "-o", out, "-m", near4) == 0
    np.testing.assert_array_equal(read_image(out), nearest(read_image(src), 4))


def test_explicit_skip_existing_keeps_and_overwrite_replaces(tmp_path: Path, near4: Path) -> None:
    src, out, before = _existing_output(tmp_path)
    assert upscale(src, "-o", out, "-m", near4, "--skip-existing") == 0
    assert (out / "a.png").read_bytes() == before
    assert (out / "a.png").stat().st_mtime_ns == 1_000_000_000

    assert upscale(src, "-o", out, "-m", near4, "--overwrite") == 0
    np.testing.assert_array_equal(read_image(out / "a.png"), nearest(read_image(src / "a.png"), 4))
    assert files_under(out) == ["a.png"]


def test_skip_existing_and_overwrite_are_exclusive(tmp_path: Path, near4: Path) -> None:
    src = image(tmp_path / "a.png")
    with pytest.raises(SystemExit) as exc:
        upscale(src, "-o", tmp_path / "o.png", "-m", near4, "--overwrite", "--skip-existing")
    assert exc.value.code == 2
    assert not (tmp_path / "o.png").exists()


def test_output_over_an_input_is_refused(tmp_path: Path, near4: Path, capsys) -> None:
    src = tmp_path / "in"
    a = image(src / "a.png")
    before = a.read_bytes()
    # Same folder, no suffix, same format: every output name is an input name.
    assert upscale(src, "-o", src, "-m", near4, "--overwrite") == 1
    assert a.read_bytes() == before
    assert files_under(src) == ["a.png"]
    captured = capsys.readouterr()
    assert "overwrite an input" in captured.out + captured.err


@pytest.mark.parametrize("where", ["inside", "beside"])
def test_a_rerun_does_not_take_its_own_outputs_for_inputs(tmp_path: Path, near4: Path, capsys, where) -> None:
    """-o inside the input folder, or the input folder itself with --suffix: the second run
    found the first run's outputs, upscaled them again (a_x4_x4.png) and failed on the rest."""
    src = tmp_path / "in"
    image(src / "a.png")
    image(src / "sub" / "b.png", seed=1)
    args = (src, "-o", src / "up", "-m", near4) if where == "inside" else (src, "-o", src, "-m", near4, "--suffix", "_x4")
    assert upscale(*args) == 0
    first = files_under(src)
    assert main(["upscale", *map(str, args), "--precision", "fp32"]) == 0
    assert files_under(src) == first
    assert "upscaled 0, skipped 2 (already there; --overwrite to redo)\n" in capsys.readouterr().err
    assert upscale(*args, "--overwrite") == 0 and files_under(src) == first
    # named on the command line, an output is an input like any other
    assert upscale(src / "up" / "a.png" if where == "inside" else src / "a_x4.png", "-o", tmp_path / "again.png", "-m", near4) == 0
    assert read_image(tmp_path / "again.png").shape == (H * 16, W * 16, 3)


def test_an_input_that_is_also_another_s_output_is_refused_in_any_order(tmp_path: Path) -> None:
    """in1/a.png -> in2/a.png, and in2/a.png -> itself: a conflict whatever the order of the inputs
    (one order used to drop in2/a.png as an "earlier output" and then overwrite it)."""
    from esrforge.cli import CommandError, plan_outputs

    image(tmp_path / "in1" / "a.png")
    image(tmp_path / "in2" / "a.png", seed=1)
    for order in (["in1", "in2"], ["in2", "in1"]):
        with pytest.raises(CommandError, match="would be written from both"):
            plan_outputs([str(tmp_path / d) for d in order], tmp_path / "in2")


@pytest.mark.parametrize("suffix", ["/x", "a/b", "..\\x"])
def test_a_suffix_with_a_path_separator_is_refused(tmp_path: Path, near4: Path, capsys, suffix) -> None:
    image(tmp_path / "in" / "a.png")
    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "-m", near4, "--suffix", suffix) == 1
    assert f"--suffix {suffix!r}: a suffix is part of a file name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_written_is_refused_before_any_upscaling(tmp_path: Path, near4: Path, monkeypatch, capsys) -> None:
    import esrforge.infer.upscale as up

    monkeypatch.setattr(up.Upscaler, "upscale", lambda *a, **k: pytest.fail("the model ran"))
    image(tmp_path / "in" / "a.png")
    image(tmp_path / "in" / "b.png")
    (tmp_path / "afile").write_bytes(b"x")
    assert upscale(tmp_path / "in", "-o", tmp_path / "afile", "-m", near4) == 1
    assert capsys.readouterr().err.strip() == f"esrforge upscale: error: -o {tmp_path / 'afile'}: is a file, not a folder"
    assert upscale(tmp_path / "in", "-o", tmp_path / "afile" / "deeper", "-m", near4) == 1
    assert f"-o {tmp_path / 'afile' / 'deeper'}: {tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    assert upscale(tmp_path / "in" / "a.png", "-o", tmp_path / "afile" / "x.png", "-m", near4) == 1
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # tests may run as root, who may write anywhere
    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "-m", near4) == 1
    assert f"-o {tmp_path / 'out'}: cannot write in {tmp_path} (permission denied)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["x.gif", "x.AVIF", "x.heic"])
def test_an_output_in_a_format_esrforge_does_not_write_is_refused(tmp_path: Path, near4: Path, capsys, name) -> None:
    src = image(tmp_path / "a.png")
    assert upscale(src, "-o", tmp_path / name, "-m", near4) == 1
    assert f"-o {tmp_path / name}: esrforge does not write {Path(name).suffix} images" in capsys.readouterr().err
    assert not (tmp_path / name).exists()  # it used to become a folder holding a.png


def test_single_file_output_equal_to_input_is_refused(tmp_path: Path, near4: Path) -> None:
    a = image(tmp_path / "a.png")
    before = a.read_bytes()
    assert upscale(a, "-o", a, "-m", near4, "--overwrite") == 1
    assert a.read_bytes() == before
    assert files_under(tmp_path) == ["a.png", "near_x4.pth"]


def test_corrupt_image_is_reported_and_others_still_written(tmp_path: Path, near4: Path, capsys) -> None:
    src = tmp_path / "in"
    image(src / "a.png", seed=1)
    bad = src / "b.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    image(src / "c.png", seed=3)
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4) == 1
    assert files_under(out) == ["a.png", "c.png"]
    assert read_image(out / "c.png").shape == (H * 4, W * 4, 3)
    captured = capsys.readouterr()
    assert str(bad) in captured.out + captured.err


def test_a_failed_write_names_the_output_and_the_rest_are_written(tmp_path: Path, near4: Path, capsys) -> None:
    src = tmp_path / "in"
    for name in ("a.png", "sub/b.png", "c.png"):
        image(src / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_bytes(b"a file where the output folder should be")
    assert upscale(src, "-o", out, "-m", near4) == 1
    assert files_under(out) == ["a.png", "c.png", "sub"]
    assert read_image(out / "c.png").shape == (H * 4, W * 4, 3)
    err = capsys.readouterr().err
    assert f"error: {out / 'sub' / 'b.png'}" in err


def test_out_of_memory_while_writing_one_image_is_reported_and_the_run_goes_on(tmp_path: Path, near4: Path, monkeypatch, capsys) -> None:
    import esrforge.images

    src = tmp_path / "in"
    for i in range(3):
        image(src / f"{i}.png", seed=i)
    real = esrforge.images.write_image

    def write(path, img, **kw):
        if Path(path).name == "1.png":
            raise MemoryError("cannot allocate")
        real(path, img, **kw)

    monkeypatch.setattr(esrforge.images, "write_image", write)
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4) == 1
    assert files_under(out) == ["0.png", "2.png"]
    assert f"error: {out / '1.png'}: cannot allocate" in capsys.readouterr().err


def _record_upscales_and_writes(monkeypatch) -> list[str]:
    import esrforge.images
    from esrforge.infer import Upscaler

    events: list[str] = []
    real_up, real_write = Upscaler.upscale, esrforge.images.write_image

    def up(self, img, progress=None):
        events.append("upscale")
        return real_up(self, img, progress)

    def write(path, img, **kw):
        real_write(path, img, **kw)
        events.append("written")

    monkeypatch.setattr(Upscaler, "upscale", up)
    monkeypatch.setattr(esrforge.images, "write_image", write)
    return events


def test_folder_output_is_the_same_when_writes_wait_for_memory(tmp_path: Path, near4: Path, monkeypatch) -> None:
    """Writes overlap the next image only while RAM allows; low on memory, each is done first."""
    import esrforge.infer.device

    src = tmp_path / "in"
    for i in range(4):
        image(src / f"{i}.png", seed=i)
    assert upscale(src, "-o", tmp_path / "overlapped", "-m", near4) == 0
    events = _record_upscales_and_writes(monkeypatch)
    monkeypatch.setattr(esrforge.infer.device, "free_memory_bytes", lambda device: 0)
    assert upscale(src, "-o", tmp_path / "serial", "-m", near4) == 0
    assert events == ["upscale", "written"] * 4
    for i in range(4):
        a, b = (tmp_path / d / f"{i}.png" for d in ("overlapped", "serial"))
        assert a.read_bytes() == b.read_bytes()


def test_interrupt_finishes_the_write_in_flight_and_leaves_no_partial_file(tmp_path: Path, near4: Path, monkeypatch) -> None:
    from esrforge.infer import Upscaler

    src = tmp_path / "in"
    for i in range(3):
        image(src / f"{i}.png", seed=i)
    real_up, calls = Upscaler.upscale, []

    def up(self, img, progress=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_up(self, img, progress)

    monkeypatch.setattr(Upscaler, "upscale", up)
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4) == 130
    assert files_under(out) == ["0.png"]  # the first image's write was let finish
    assert read_image(out / "0.png").shape == (H * 4, W * 4, 3)


def test_per_image_errors_go_to_stderr(tmp_path: Path, near4: Path, capsys) -> None:
    # SRC BUG (cli.upscale): per-image errors are printed with tqdm.write(...), whose default file
    # is sys.stdout, so "error: <file>: ..." lands on stdout, mixed into anything piped from it.
    # They should go to stderr (tqdm.write(..., file=sys.stderr)) like every other error.
    src = tmp_path / "in"
    bad = src / "b.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image at all")
    image(src / "c.png")
    assert upscale(src, "-o", tmp_path / "out", "-m", near4) == 1
    assert upscale(src, "-o", src, "-m", near4, "--overwrite") == 1
    captured = capsys.readouterr()
    assert str(bad) in captured.err
    assert "overwrite an input" in captured.err
    assert "error" not in captured.out


# --- upscale: channels and bit depth ------------------------------------------------------------


def test_upscaling_on_cpu_tunes_the_allocator(tmp_path: Path, near4: Path, monkeypatch) -> None:
    import esrforge.infer.device as device

    calls = []
    monkeypatch.setattr(device, "tune_cpu_allocator", lambda: calls.append(1) or True)
    assert upscale(image(tmp_path / "in.png"), "-o", tmp_path / "out.png", "-m", near4, "--device", "cpu") == 0
    assert calls == [1]


def test_grayscale_in_grayscale_out(tmp_path: Path, rrdb_file: Path, near4: Path) -> None:
    gray = photo_like(H, W, c=1)
    src = image(tmp_path / "g.png", gray)
    assert upscale(src, "-o", tmp_path / "r.png", "-m", rrdb_file) == 0
    assert read_image(tmp_path / "r.png").shape == (H * 4, W * 4, 1)
    # With a known model the values are checked too (gray runs through the RGB model and back).
    assert upscale(src, "-o", tmp_path / "n.png", "-m", near4) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "n.png"), nearest(gray, 4))


def _nearest_file(tmp_path: Path, in_ch: int, out_ch: int) -> Path:
    from esrforge.modelio import save_model
    from esrforge.modelio.detect import describe

    m = nearest_compact(2, in_ch=in_ch, out_ch=out_ch)
    desc = describe("compact", "basicsr", m.hparams(), m, "test")
    return save_model(tmp_path / f"near_{in_ch}to{out_ch}.safetensors", m.state_dict(), desc)


@pytest.mark.parametrize("in_ch, out_ch", [(1, 3), (3, 1)])
def test_models_whose_output_channels_differ_from_their_input(tmp_path: Path, capsys, in_ch, out_ch) -> None:
    """A 1 -> 3 model (colourizing) and a 3 -> 1 model: the image keeps its own channels; a colour
    result for a gray image is averaged, a gray result for a colour image repeated. Both used to
    fail on every image ("could not broadcast")."""
    model = _nearest_file(tmp_path, in_ch, out_ch)
    rgb, gray = photo_like(H, W), photo_like(H, W, c=1, seed=3)
    for name, img in (("rgb", rgb), ("gray", gray)):
        assert upscale(image(tmp_path / f"{name}.png", img), "-o", tmp_path / f"{name}_x2.png", "-m", model) == 0
    # The zeroed residual leaves the model's own base: the input (or its channel mean) upsampled.
    np.testing.assert_array_equal(read_image(tmp_path / "gray_x2.png"), nearest(gray, 2))
    got = read_image(tmp_path / "rgb_x2.png")
    assert got.shape == (H * 2, W * 2, 3)
    if in_ch == 1:  # each colour channel through the gray model: the channel itself
        np.testing.assert_array_equal(got, nearest(rgb, 2))
    else:  # the RGB mean, in all three channels
        mean = rgb.astype(np.float32).mean(axis=2, keepdims=True)
        assert np.abs(got.astype(np.float32) - nearest(np.repeat(mean, 3, axis=2), 2)).max() <= 0.5 + 1e-3
    # .pth cannot record in_ch != out_ch for a compact model: refused, not written unloadable
    assert cli("convert", model, tmp_path / "m.pth") == 1
    assert "a .pth file cannot record this compact model's" in capsys.readouterr().err
    assert not (tmp_path / "m.pth").exists()


def test_rgba_models_see_the_alpha_with_the_colour(tmp_path: Path, capsys) -> None:
    """A 4-channel model (RGBA textures): the alpha goes through it with the colour; RGB and gray
    images get an opaque alpha for it and come back in their own channels."""
    model = save(nearest_compact(2, in_ch=4, out_ch=4), tmp_path / "rgba_x2.pth")
    assert cli("info", model, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["in_channels"], info["out_channels"]) == (4, 4)
    rgba = photo_like(H, W, c=4)
    rgba[..., 3] = np.arange(W, dtype=np.uint8)[None, :] * 8  # a ramp of transparency
    for name, img in (("rgba", rgba), ("rgb", rgba[..., :3]), ("gray", rgba[..., :1]), ("la", rgba[..., [0, 3]])):
        assert upscale(image(tmp_path / f"{name}.png", img), "-o", tmp_path / f"{name}_x2.png", "-m", model) == 0
        np.testing.assert_array_equal(read_image(tmp_path / f"{name}_x2.png"), nearest(img, 2), err_msg=name)
    assert upscale(tmp_path / "rgb.png", "-o", tmp_path / "chain.png", "-m", model, "-m", save(nearest_compact(2), tmp_path / "n2.pth")) == 1
    assert "a 4-channel (RGBA) model takes 4 channels in and out, and chains only with other RGBA models" in capsys.readouterr().err


def test_rgba_in_rgba_out_alpha_preserved(tmp_path: Path, near4: Path) -> None:
    img = photo_like(H, W, c=4)
    # 8x8 checkerboard of fully transparent and fully opaque blocks.
    yy, xx = np.mgrid[0:H, 0:W]
    alpha = np.where((yy // 8 + xx // 8) % 2 == 0, 255, 0).astype(np.uint8)
    img[..., 3] = alpha
    src = image(tmp_path / "rgba.png", img)
    assert upscale(src, "-o", tmp_path / "o.png", "-m", near4) == 0
    out = read_image(tmp_path / "o.png")
    assert out.shape == (H * 4, W * 4, 4) and out.dtype == np.uint8
    want_alpha = nearest(alpha, 4)
    # Compare away from block edges, where any sensible alpha upscale agrees with nearest.
    oy, ox = np.mgrid[0 : H * 4, 0 : W * 4]
    inner = (np.minimum(oy % 32, 31 - oy % 32) >= 4) & (np.minimum(ox % 32, 31 - ox % 32) >= 4)
    assert np.abs(out[..., 3].astype(int) - want_alpha)[inner].max() <= 8
    # Visible colour is the model's output (nearest here), untouched by the transparency fill.
    opaque = inner & (want_alpha == 255)
    np.testing.assert_array_equal(out[..., :3][opaque], nearest(img[..., :3], 4)[opaque])


def test_gray_alpha_png_in_gray_alpha_png_out(tmp_path: Path, near4: Path) -> None:
    img = photo_like(H, W, c=2)
    img[..., 1] = 255
    img[: H // 2, :, 1] = 0  # top half transparent
    src = image(tmp_path / "la.png", img)
    assert upscale(src, "-o", tmp_path / "o.png", "-m", near4) == 0
    out = read_image(tmp_path / "o.png")
    assert out.shape == (H * 4, W * 4, 2) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[H * 2 + 8 :, :, 0], nearest(img[..., :1], 4)[H * 2 + 8 :, :, 0])
    assert (out[: H * 2 - 8, :, 1] == 0).all() and (out[H * 2 + 8 :, :, 1] == 255).all()
    assert upscale(src, "-o", tmp_path / "o.jpg", "-m", near4) == 1  # alpha into JPEG is refused
    assert not (tmp_path / "o.jpg").exists()


def test_16bit_png_in_16bit_png_out(tmp_path: Path, near4: Path, rrdb_file: Path) -> None:
    img = photo_like(H, W, dtype=np.uint16)
    src = image(tmp_path / "deep.png", img)
    assert upscale(src, "-o", tmp_path / "o.png", "-m", near4) == 0
    out = read_image(tmp_path / "o.png")
    assert out.dtype == np.uint16 and out.shape == (H * 4, W * 4, 3)
    assert len(np.unique(out)) > 256
    assert np.abs(out.astype(np.int64) - nearest(img, 4)).max() <= 1
    # A real network also keeps 16 bits, not 8 bits scaled up.
    assert upscale(src, "-o", tmp_path / "r.png", "-m", rrdb_file) == 0
    r = read_image(tmp_path / "r.png")
    assert r.dtype == np.uint16 and len(np.unique(r)) > 256 and np.any(r % 257 != 0)


# --- upscale: scale, chains, seamless ------------------------------------------------------------


def test_float_samples_outside_0_1_and_nan_are_named_and_do_not_spread(tmp_path: Path, near4: Path, capsys) -> None:
    img = photo_like(H, W).astype(np.float32) / 255
    hdr = img * 4  # an HDR or 0..255 float TIFF: models take 0..1
    bad = img.copy()
    bad[5, 7, 1] = np.nan
    import cv2

    (tmp_path / "in").mkdir()
    # uncompressed: OpenCV before 5 compresses float RGB TIFFs lossily (SGILOG) by default
    assert cv2.imwrite(str(tmp_path / "in" / "hdr.tiff"), hdr[:, :, ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    image(tmp_path / "in" / "nan.tiff", bad)
    image(tmp_path / "in" / "ok.tiff", img)
    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "-m", near4) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"esrforge upscale: warning: {tmp_path / 'in' / 'hdr.tiff'}: float samples range from {hdr.min():g} to {hdr.max():g}; "
        "esrforge works in 0..1, so the rest is clipped",
        f"esrforge upscale: warning: {tmp_path / 'in' / 'nan.tiff'}: 1 NaN sample(s) set to 0",
    ]
    out = read_image(tmp_path / "out" / "nan.tiff")
    assert np.isfinite(out).all()  # one NaN used to become hundreds through the convs
    expected = nearest(np.nan_to_num(bad, nan=0.0), 4)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "out" / "hdr.tiff"), nearest(np.clip(hdr, 0, 1), 4), atol=1e-6)


def test_rgba_into_jpg_is_refused_before_the_model_runs(tmp_path: Path, near4: Path, monkeypatch, capsys) -> None:
    from esrforge.infer import Upscaler

    src = tmp_path / "in"
    image(src / "rgb.png")
    rgba = photo_like(H, W, c=4)
    rgba[:, :, 3] = 128
    image(src / "rgba.png", rgba)
    calls = []
    real = Upscaler.upscale
    monkeypatch.setattr(Upscaler, "upscale", lambda self, img, progress=None: calls.append(img.shape) or real(self, img, progress))
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4, "--format", "jpg") == 1
    assert files_under(out) == ["rgb.jpg"] and calls == [(H, W, 3)]
    err = capsys.readouterr().err
    assert f"error: {out / 'rgba.jpg'}: .jpg cannot store the alpha channel of {src / 'rgba.png'}; use png, webp or tiff" in err


def test_outscale_2_with_x4_model(tmp_path: Path, rrdb_file: Path) -> None:
    src = image(tmp_path / "a.png")
    assert upscale(src, "-o", tmp_path / "o.png", "-m", rrdb_file, "--outscale", "2") == 0
    assert read_image(tmp_path / "o.png").shape == (H * 2, W * 2, 3)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_outscale_must_be_positive_and_finite(tmp_path: Path, rrdb_file: Path, capsys, value) -> None:
    src = image(tmp_path / "a.png")
    assert upscale(src, "-o", tmp_path / "o.png", "-m", rrdb_file, "--outscale", value) == 1
    assert capsys.readouterr().err.strip() == f"esrforge upscale: error: --outscale must be a finite number > 0, got {float(value)}"
    assert not (tmp_path / "o.png").exists()


def test_an_outscale_too_large_to_allocate_fails_that_image_only(tmp_path: Path, near4: Path, capsys) -> None:
    image(tmp_path / "in" / "a.png")
    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "-m", near4, "--outscale", "1e6") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'in' / 'a.png'}: OpenCV: (-4:Insufficient memory) Failed to allocate")
    assert files_under(tmp_path / "out") == []


def test_ctrl_c_while_the_libraries_load_is_one_line(monkeypatch, capsys) -> None:
    import esrforge.cli as cli_module

    def slow_import():
        raise KeyboardInterrupt  # as if Ctrl-C arrived while torch and OpenCV were importing

    monkeypatch.setattr(cli_module, "build_parser", slow_import)
    assert main(["upscale", "x.png", "-o", "y.png"]) == 130
    assert capsys.readouterr().err == "esrforge upscale: interrupted (no output is left half-written)\n"


def test_model_files_that_cannot_be_read_or_written_are_one_line_errors(tmp_path: Path, rrdb_file: Path, capsys) -> None:
    (tmp_path / "afile").write_bytes(b"x")
    assert cli("convert", rrdb_file, tmp_path / "afile" / "m.pth") == 1
    err = capsys.readouterr().err.strip()
    assert err == f"esrforge convert: error: {tmp_path / 'afile' / 'm.pth'}: cannot create it: a file is in the way of its folder"
    assert cli("interpolate", rrdb_file, rrdb_file, "--alpha", "0.5", "-o", tmp_path / "afile" / "i.pth") == 1
    assert "a file is in the way of its folder" in capsys.readouterr().err
    assert cli("info", tmp_path) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_without_cpu_units_warns_in_one_line(tmp_path: Path, near4: Path, monkeypatch, capsys, precision) -> None:
    """On a CPU without bf16/fp16 units oneDNN crawls (10x slower than fp32): say so, still upscale."""
    import esrforge.infer.device as device

    src = image(tmp_path / "a.png")
    for fast in (False, True):
        monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: fast)
        monkeypatch.setattr(device, "cpu_has_fast_fp16", lambda: fast)
        for choice in (precision, "auto"):
            out = tmp_path / f"{fast}_{choice}.png"
            assert cli("upscale", src, "-o", out, "-m", near4, "--device", "cpu", "--precision", choice, "-q") == 0
            assert read_image(out).shape == (H * 4, W * 4, 3)
            err = capsys.readouterr().err
            if fast or choice == "auto":
                assert err == ""
            else:
                assert err.splitlines() == [
                    f"esrforge upscale: warning: precision {precision}: this CPU has no {precision} units "
                    f"({'AVX512-BF16 or AMX' if precision == 'bf16' else 'AVX512-FP16 or AMX-FP16'}), "
                    f"so {precision} runs many times slower than fp32 here; use auto or fp32"
                ]


def test_chain_of_two_x2_models_gives_x4(tmp_path: Path) -> None:
    src = image(tmp_path / "a.png")
    r2 = save(tiny_rrdb(2), tmp_path / "rrdb_x2.pth")  # x2 RRDB uses pixel unshuffle
    c2 = save(tiny_compact(2), tmp_path / "compact_x2.pth")
    assert upscale(src, "-o", tmp_path / "o.png", "-m", r2, "-m", c2) == 0
    assert read_image(tmp_path / "o.png").shape == (H * 4, W * 4, 3)
    # Two exact x2 nearest models must compose to exactly x4 nearest (16-bit between stages).
    n2 = save(nearest_compact(2), tmp_path / "n2.pth")
    assert upscale(src, "-o", tmp_path / "n.png", "-m", n2, "-m", n2) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "n.png"), nearest(read_image(src), 4))


def test_seamless_tile_wraps_edges(tmp_path: Path) -> None:
    model = save(tiny_compact(2, seed=5), tmp_path / "c2.pth")
    a = photo_like(H, W, seed=1)
    b = a.copy()
    b[:, -1] = 255 - b[:, -1]  # change only the rightmost column
    image(tmp_path / "in" / "a.png", a)
    image(tmp_path / "in" / "b.png", b)
    assert upscale(tmp_path / "in", "-o", tmp_path / "plain", "-m", model) == 0
    assert upscale(tmp_path / "in", "-o", tmp_path / "wrap", "-m", model, "--seamless", "tile") == 0
    for folder in ("plain", "wrap"):
        for name in ("a.png", "b.png"):
            assert read_image(tmp_path / folder / name).shape == (H * 2, W * 2, 3)
    left = slice(0, 4)  # first output columns
    plain_a, plain_b = (read_image(tmp_path / "plain" / n)[:, left] for n in ("a.png", "b.png"))
    wrap_a, wrap_b = (read_image(tmp_path / "wrap" / n)[:, left] for n in ("a.png", "b.png"))
    # Without wrapping the far right edge cannot reach the left edge; with it, it must.
    np.testing.assert_array_equal(plain_a, plain_b)
    assert np.any(wrap_a != wrap_b)


@pytest.mark.parametrize("mode", ["mirror", "replicate"])
def test_seamless_mirror_and_replicate_pad_like_numpy(tmp_path: Path, mode: str) -> None:
    """The model sees the image padded as np.pad's reflect/edge: upscaling that padded image whole
    and cropping gives the same pixels."""
    model = save(tiny_compact(2, seed=5), tmp_path / "c2.pth")
    a = photo_like(H, W, seed=1)
    src = image(tmp_path / "a.png", a)
    assert upscale(src, "-o", tmp_path / "o.png", "-m", model, "--seamless", mode, "--tile", "0") == 0
    m = 16  # the tiler's margin, which is also the seamless padding
    padded = np.pad(a, ((m, m), (m, m), (0, 0)), mode={"mirror": "reflect", "replicate": "edge"}[mode])
    ref = esrforge.upscale_image(padded, esrforge.load_model(model), precision="fp32", tile=0)[2 * m : -2 * m, 2 * m : -2 * m]
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), ref)


@pytest.mark.parametrize("fmt, ext", [("jpg", ".jpg"), ("webp", ".webp"), ("tiff", ".tiff"), ("png", ".png")])
def test_format_writes_that_format(tmp_path: Path, near4: Path, fmt: str, ext: str) -> None:
    src = tmp_path / "in"
    image(src / "a.png")
    assert upscale(src, "-o", tmp_path / "out", "-m", near4, "--format", fmt) == 0
    assert files_under(tmp_path / "out") == [f"a{ext}"]
    magic = {".jpg": b"\xff\xd8", ".webp": b"RIFF", ".tiff": b"II*\x00", ".png": b"\x89PNG"}[ext]
    assert (tmp_path / "out" / f"a{ext}").read_bytes().startswith(magic)
    assert read_image(tmp_path / "out" / f"a{ext}").shape == (H * 4, W * 4, 3)


def test_tile_sizes_at_the_command_line_give_the_same_image(tmp_path: Path, rrdb_file: Path, capsys) -> None:
    src = image(tmp_path / "a.png")
    outs = {}
    for tile in ("0", "16", "auto"):
        assert upscale(src, "-o", tmp_path / f"t{tile}.png", "-m", rrdb_file, "--tile", tile) == 0
        outs[tile] = read_image(tmp_path / f"t{tile}.png")
    assert psnr_u8(outs["16"], outs["0"]) >= 45 and psnr_u8(outs["auto"], outs["0"]) >= 45
    for bad in ("-3", "1", "15"):  # a 1-pixel tile would run its 16-pixel margin a thousand times over
        with pytest.raises(SystemExit):
            upscale(src, "-o", tmp_path / "x.png", "-m", rrdb_file, "--tile", bad)
        assert f"--tile must be 0 (whole image), auto, or at least 16, got {bad}" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("device, message", [("tpu", "unknown device"), ("cuda:7", "cuda"), ("mps", "mps")])
def test_unavailable_devices_are_refused_at_the_command_line(tmp_path: Path, near4: Path, capsys, device, message) -> None:
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    src = image(tmp_path / "a.png")
    assert cli("upscale", src, "-o", tmp_path / "o.png", "-m", near4, "--device", device) == 1
    err = capsys.readouterr().err
    assert err.startswith("esrforge upscale: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_the_esrforge_console_script_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "esrforge"
    if not exe.exists():
        pytest.skip("esrforge is not installed as a console script here (running from a source tree)")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"esrforge {esrforge.__version__}"


# --- info ---------------------------------------------------------------------------------------


def info_json(path: Path, capsys) -> dict:
    capsys.readouterr()
    assert cli("info", path, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_info_json_rrdb(tmp_path: Path, capsys) -> None:
    m = tiny_rrdb(4, num_grow_ch=6)
    rec = info_json(save(m, tmp_path / "r.pth"), capsys)
    expected = {
        "arch": "rrdbnet",
        "layout": "basicsr",
        "scale": 4,
        "in_channels": 3,
        "out_channels": 3,
        "num_feat": 8,
        "num_block": 2,
        "num_grow_ch": 6,
        "params": sum(p.numel() for p in m.parameters()),
    }
    assert {k: rec.get(k) for k in expected} == expected


def test_info_json_compact(tmp_path: Path, capsys) -> None:
    m = tiny_compact(2, num_conv=5)
    rec = info_json(save(m, tmp_path / "c.pth"), capsys)
    expected = {
        "arch": "compact",
        "scale": 2,
        "in_channels": 3,
        "out_channels": 3,
        "num_feat": 8,
        "num_conv": 5,
        "activation": "prelu",
        "params": sum(p.numel() for p in m.parameters()),
    }
    assert {k: rec.get(k) for k in expected} == expected


def test_info_plain_text(tmp_path: Path, rrdb_file: Path, capsys) -> None:
    assert cli("info", rrdb_file) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line.strip())
    assert lines["arch"] == "rrdbnet" and lines["num_grow_ch"] == "6" and lines["scale"] == "4"


def test_info_on_discriminator_fails(tmp_path: Path, capsys) -> None:
    sd = {
        "conv0_0.weight": torch.zeros(8, 3, 3, 3),
        "conv0_1.weight": torch.zeros(8, 8, 4, 4),
        "bn0_1.weight": torch.zeros(8),
        "linear1.weight": torch.zeros(100, 32),
        "linear2.weight": torch.zeros(1, 100),
    }
    path = tmp_path / "net_d.pth"
    torch.save(sd, path)
    assert cli("info", path) == 1
    err = capsys.readouterr().err
    assert "discriminator" in err and str(path) in err


def test_info_on_missing_file_fails(tmp_path: Path, capsys) -> None:
    assert cli("info", tmp_path / "none.pth") == 1
    assert "none.pth" in capsys.readouterr().err


# --- convert --------------------------------------------------------------------------------------

HPARAM_KEYS = ("arch", "scale", "in_channels", "out_channels", "num_feat", "num_block", "num_grow_ch", "params")


def test_convert_to_safetensors_and_original_pth(tmp_path: Path, rrdb_file: Path, capsys) -> None:
    st = tmp_path / "conv.safetensors"
    orig = tmp_path / "conv_orig.pth"
    assert cli("convert", rrdb_file, st) == 0
    assert cli("convert", rrdb_file, orig, "--layout", "original") == 0

    base = info_json(rrdb_file, capsys)
    rec_st = info_json(st, capsys)
    rec_orig = info_json(orig, capsys)
    for rec in (rec_st, rec_orig):
        assert {k: rec[k] for k in HPARAM_KEYS} == {k: base[k] for k in HPARAM_KEYS}
    assert rec_st["layout"] == "basicsr"
    assert rec_orig["layout"] == "original"
    # The original (2018) layout is a bare state dict with model.* keys, not a params_ema wrapper.
    raw = torch.load(orig, weights_only=True)
    assert "model.0.weight" in raw and "params_ema" not in raw

    src = image(tmp_path / "a.png")
    outs = []
    for i, model in enumerate((rrdb_file, st, orig)):
        dst = tmp_path / f"o{i}.png"
        assert upscale(src, "-o", dst, "-m", model) == 0
        outs.append(read_image(dst))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_convert_half_stores_fp16(tmp_path: Path, rrdb_file: Path) -> None:
    dst = tmp_path / "half.safetensors"
    assert cli("convert", rrdb_file, dst, "--half") == 0
    with safe_open(str(dst), framework="pt") as f:
        keys = list(f.keys())
        assert keys and all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    full = esrforge.load_model(rrdb_file).module.state_dict()
    half = esrforge.load_model(dst).module.state_dict()
    assert all(torch.equal(half[k], full[k].half().float()) for k in full)


def test_convert_onto_itself_is_refused(tmp_path: Path, rrdb_file: Path, capsys) -> None:
    before = rrdb_file.read_bytes()
    assert cli("convert", rrdb_file, rrdb_file) == 1
    assert rrdb_file.read_bytes() == before
    assert "refusing" in capsys.readouterr().err


def test_convert_original_layout_refused_for_compact(tmp_path: Path, capsys) -> None:
    src = save(tiny_compact(), tmp_path / "c.pth")
    assert cli("convert", src, tmp_path / "c_orig.pth", "--layout", "original") == 1
    assert "original" in capsys.readouterr().err
    assert not (tmp_path / "c_orig.pth").exists()


def test_esrgan_plus_converts_to_the_original_layout_by_default(tmp_path: Path, capsys) -> None:
    """spandrel (chaiNNer, ComfyUI) reads ESRGAN+'s 1x1 convs only under the original names."""
    from esrforge.modelio.detect import describe

    m = tiny_rrdb(4, plus=True)
    src = tmp_path / "plus.safetensors"
    esrforge.save_model(src, m.state_dict(), describe("rrdbnet", "basicsr", m.hparams(), m, "test"))
    assert cli("convert", src, tmp_path / "plus.pth") == 0
    assert "layout original" in capsys.readouterr().out
    keys = set(torch.load(tmp_path / "plus.pth", weights_only=True))
    assert "model.1.sub.0.RDB1.conv1x1.weight" in keys and not any(k.startswith("body.") for k in keys)
    img = photo_like(12, 10)
    ref = esrforge.upscale_image(img, esrforge.load_model(src), precision="fp32")
    assert np.array_equal(esrforge.upscale_image(img, esrforge.load_model(tmp_path / "plus.pth"), precision="fp32"), ref)
    assert cli("convert", src, tmp_path / "plus_b.pth", "--layout", "basicsr") == 0  # still there when asked


def test_converting_a_leakyrelu_compact_to_pth_warns_that_pth_cannot_keep_it(tmp_path: Path, capsys) -> None:
    from esrforge.modelio.detect import describe

    m = tiny_compact(activation="leakyrelu")
    src = tmp_path / "leaky.safetensors"
    esrforge.save_model(src, m.state_dict(), describe("compact", "compact", m.hparams(), m, "test"))
    assert esrforge.load_model(src).descriptor.hparams["activation"] == "leakyrelu"
    capsys.readouterr()
    assert cli("convert", src, tmp_path / "leaky.pth") == 0
    err = capsys.readouterr().err
    assert f"esrforge convert: warning: {tmp_path / 'leaky.pth'}: a .pth file cannot record the leakyrelu activation" in err
    assert cli("convert", src, tmp_path / "leaky2.safetensors") == 0
    assert "warning" not in capsys.readouterr().err


# --- interpolate ----------------------------------------------------------------------------------


def weights(path: Path) -> dict[str, torch.Tensor]:
    return esrforge.load_model(path).module.state_dict()


def test_interpolate_alpha_0_half_1(tmp_path: Path) -> None:
    a = save(tiny_rrdb(seed=1), tmp_path / "a.pth")
    b = save(tiny_rrdb(seed=2), tmp_path / "b.pth")
    wa, wb = weights(a), weights(b)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # the blend must be able to show
    for alpha in ("0", "1", "0.5"):
        assert cli("interpolate", a, b, "--alpha", alpha, "-o", tmp_path / f"m{alpha}.pth") == 0
    w0, w1, wh = (weights(tmp_path / f"m{x}.pth") for x in ("0", "1", "0.5"))
    assert set(w0) == set(wa)
    for k in wa:
        assert torch.equal(w0[k], wa[k]), k
        assert torch.equal(w1[k], wb[k]), k
        torch.testing.assert_close(wh[k], (wa[k] + wb[k]) / 2, rtol=1e-6, atol=1e-7)


def test_interpolate_different_shapes_fails(tmp_path: Path, capsys) -> None:
    a = save(tiny_rrdb(num_grow_ch=6), tmp_path / "a.pth")
    b = save(tiny_rrdb(num_grow_ch=8), tmp_path / "b.pth")
    out = tmp_path / "m.pth"
    assert cli("interpolate", a, b, "--alpha", "0.5", "-o", out) == 1
    assert "cannot interpolate models of different shapes (num_grow_ch 6 vs 8); both must be" in capsys.readouterr().err
    assert not out.exists()
    c = save(tiny_compact(), tmp_path / "c.pth")
    assert cli("interpolate", a, c, "--alpha", "0.5", "-o", out) == 1
    assert not out.exists()


def test_interpolate_alpha_out_of_range_fails(tmp_path: Path, rrdb_file: Path, capsys) -> None:
    out = tmp_path / "m.pth"
    assert cli("interpolate", rrdb_file, rrdb_file, "--alpha", "1.5", "-o", out) == 1
    assert "--alpha" in capsys.readouterr().err
    assert not out.exists()


def test_opencv_is_silenced_on_every_supported_version():
    # cv2.utils.logging is OpenCV 4.13's; 4.10-4.12 have only cv2.setLogLevel (0 = silent).
    from types import SimpleNamespace

    from esrforge.cli import silence_opencv

    calls = []
    new = SimpleNamespace(utils=SimpleNamespace(logging=SimpleNamespace(LOG_LEVEL_SILENT=0, setLogLevel=calls.append)))
    silence_opencv(new)
    old = SimpleNamespace(utils=SimpleNamespace(), setLogLevel=lambda level: calls.append(("old", level)))
    silence_opencv(old)
    assert calls == [0, ("old", 0)]


def test_a_closed_pipe_ends_the_command_quietly():
    # `esrforge train --schema | head`: the reader leaving is not an error to print.
    proc = subprocess.Popen([sys.executable, "-m", "esrforge", "train", "--schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has started writing (importing takes longer)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""


def test_any_failure_of_one_image_is_reported_and_the_run_goes_on(tmp_path: Path, near4: Path, capsys, monkeypatch) -> None:
    """A damaged TIFF header (esrforge's own tag parsing raised struct.error) and an exception of
    a kind no check expects each cost their image only, named on one line."""
    import esrforge.images

    src = tmp_path / "in"
    image(src / "a.png", seed=1)
    (src / "b.tif").write_bytes(b"II*\x00")
    image(src / "c.png", seed=3)
    image(src / "d.png", seed=4)
    read = esrforge.images.read_image_and_metadata

    def flaky(path):
        if Path(path).name == "d.png":
            raise KeyError(101)
        return read(path)

    monkeypatch.setattr(esrforge.images, "read_image_and_metadata", flaky)
    out = tmp_path / "out"
    assert upscale(src, "-o", out, "-m", near4) == 1
    assert files_under(out) == ["a.png", "c.png"]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [f"error: {src / 'b.tif'}: not a readable image (damaged header: unpack requires a buffer of 4 bytes)",
                   f"error: {src / 'd.png'}: unexpected KeyError: 101"]


def test_eval_scores_a_model_as_papers_do(tmp_path: Path, near4: Path, capsys) -> None:
    """HR mod-cropped, LR from --lr (or MATLAB bicubic), Y-channel PSNR/SSIM with the border of
    the scale cropped: the numbers `esrforge metrics --y-channel --crop-border 4` gives for the
    same upscaled images."""
    from esrforge.metrics import psnr, ssim

    hr = {n: photo_like(30, 35, seed=i) for i, n in enumerate(("a", "b"))}
    for n, img in hr.items():
        write_image(tmp_path / "hr" / f"{n}.png", img)
        write_image(tmp_path / "lr" / f"{n}.png", img[:28:4, :32:4])  # every 4th pixel: nearest x4 undoes it exactly at those
    assert cli("eval", tmp_path / "hr", "-m", near4, "--lr", tmp_path / "lr", "--precision", "fp32", "--json", "--save", tmp_path / "sr") == 0
    got = json.loads(capsys.readouterr().out)
    for row in got["images"]:
        sr, ref = read_image(tmp_path / "sr" / f"{row['name']}.png"), hr[row["name"]][:28, :32]
        np.testing.assert_array_equal(sr, nearest(ref[::4, ::4], 4))
        assert row["psnr"] == pytest.approx(psnr(sr, ref, crop_border=4, y_channel=True))
        assert row["ssim"] == pytest.approx(ssim(sr, ref, crop_border=4, y_channel=True))
        assert row["psnr_rgb"] == pytest.approx(psnr(sr, ref, crop_border=4))
    assert got["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in got["images"]]))
    (tmp_path / "lr" / "b.png").unlink()
    assert cli("eval", tmp_path / "hr", "-m", near4, "--lr", tmp_path / "lr", "--precision", "fp32") == 1
    out, err = capsys.readouterr()
    assert f"{tmp_path / 'hr' / 'b.png'}: no LR partner in {tmp_path / 'lr'}" in err and out.split()[:2] == ["a", "PSNR"]
    assert cli("eval", tmp_path / "nothing", "-m", near4) == 1
