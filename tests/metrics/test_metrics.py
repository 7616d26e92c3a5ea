import importlib.util
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from esrforge.images import write_image
from esrforge.metrics import psnr, psnr_torch, rgb_to_y, ssim, ssim_torch
from esrforge.metrics.report import metrics_command
from tests.conftest import photo_like

# --- known values -----------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 5, 20, 155])
def test_psnr_of_constant_offset_is_exact(d):
    a = np.full((16, 16, 3), 100, np.uint8)
    assert psnr(a, a + d) == pytest.approx(20 * math.log10(255 / d), rel=0, abs=1e-12)
    # 16-bit and float images are compared on the same 0-255 scale
    a16, b16 = a.astype(np.uint16) * 257, (a + d).astype(np.uint16) * 257
    assert psnr(a16, b16) == pytest.approx(20 * math.log10(255 / d), abs=1e-9)
    assert psnr(a / 255.0, (a + d) / 255.0) == pytest.approx(20 * math.log10(255 / d), abs=1e-9)


def test_identical_images():
    a = photo_like(24, 24)
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, a, y_channel=True) == pytest.approx(1.0, abs=1e-12)


def test_y_channel_known_values():
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    expected = [235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]
    assert rgb_to_y(px).shape == (1, 5, 1)
    assert rgb_to_y(px)[0, :, 0] == pytest.approx(expected, abs=1e-9)
    assert rgb_to_y(px.astype(np.uint16) * 257)[0, :, 0] == pytest.approx(expected, abs=1e-9)
    assert rgb_to_y(px / 255.0)[0, :, 0] == pytest.approx(expected, abs=1e-9)
    rgba = np.concatenate([px, np.zeros_like(px[..., :1])], axis=2)  # alpha must not count
    assert rgb_to_y(rgba)[0, :, 0] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("c", [2, 4])
def test_alpha_is_left_out_of_psnr_and_ssim(c):
    # As BasicSR (which reads images without alpha) and papers: the colour is compared.
    a = photo_like(24, 24, c=c)
    b = a.copy()
    b[..., -1] = 255 - b[..., -1]  # another alpha altogether
    b[3, 4, 0] ^= 8  # and one colour sample differs
    colour = slice(0, c - 1)
    assert psnr(a, b) == pytest.approx(psnr(a[..., colour], b[..., colour]), abs=1e-12)
    assert ssim(a, b) == pytest.approx(ssim(a[..., colour], b[..., colour]), abs=1e-12)
    ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None].double() / 255 for x in (a, b))
    assert float(psnr_torch(ta, tb)[0]) == pytest.approx(psnr(a, b), abs=1e-9)
    assert float(ssim_torch(ta, tb)[0]) == pytest.approx(ssim(a, b), abs=1e-9)


def test_y_channel_psnr_uses_luma():
    a = np.zeros((12, 12, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 10  # red +10 levels: Y moves by 65.481 * 10 / 255
    assert psnr(a, b, y_channel=True) == pytest.approx(20 * math.log10(255 / (65.481 * 10 / 255)), abs=1e-9)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / 3)), abs=1e-9)


def _camera_pair():
    """skimage's camera.png and the noisy copy its tests build (legacy seed 5, sigma 20)."""
    spec = importlib.util.find_spec("skimage")  # only for the picture; skimage is the 'bench' extra
    if spec is None or spec.origin is None:
        pytest.skip("scikit-image (esrforge[bench]) not installed: no camera.png")
    cam = cv2.imread(str(Path(spec.origin).parent / "data" / "camera.png"), cv2.IMREAD_UNCHANGED)
    assert cam is not None and cam.shape == (512, 512) and cam.dtype == np.uint8
    noise = np.random.RandomState(5).randn(*cam.shape)  # same stream as np.random.seed(5); randn
    noisy = np.clip(cam + 20.0 * noise, 0, 255).astype(np.uint8)
    return cam[..., None], noisy[..., None]


def test_published_reference_values():
    """Values computed with the IPOL 'imdiff' tool (Getreuer, https://www.ipol.im/pub/art/2011/g_lmii/)
    for this image pair, as recorded in scikit-image's tests (skimage/metrics/tests/
    test_simple_metrics.py: p_IPOL = 22.409353363576034; test_structural_similarity.py:
    mssim_IPOL = 0.357959091663361, Gaussian sigma 1.5 windows; scikit-image PR 4913)."""
    cam, noisy = _camera_pair()
    assert psnr(cam, noisy) == pytest.approx(22.409353363576034, abs=1e-4)
    assert ssim(cam, noisy) == pytest.approx(0.357959091663361, abs=1e-4)


# --- SSIM against an independent implementation -----------------------------------------------


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Straightforward float64 SSIM of one plane: explicit 11x11 Gaussian, valid windows only."""
    r = np.arange(11) - 5.0
    g2 = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w = g2 / g2.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    wx, wy = sliding_window_view(x, (11, 11)), sliding_window_view(y, (11, 11))
    mx, my = (wx * w).sum((-2, -1)), (wy * w).sum((-2, -1))
    # Variances as weighted second moments about the local mean (not E[x^2] - E[x]^2).
    dx, dy = wx - mx[..., None, None], wy - my[..., None, None]
    vx, vy, cxy = (dx * dx * w).sum((-2, -1)), (dy * dy * w).sum((-2, -1)), (dx * dy * w).sum((-2, -1))
    return float(np.mean((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_a_plain_implementation_on_random_images(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (29, 23, 3), dtype=np.uint8)  # odd, non-square: catches transposed windows
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    ref = np.mean([_reference_ssim(a[..., c].astype(float), b[..., c].astype(float)) for c in range(3)])
    assert ssim(a, b) == pytest.approx(ref, rel=1e-10)
    ya, yb = rgb_to_y(a)[..., 0], rgb_to_y(b)[..., 0]
    ref_y = _reference_ssim(ya[3:-3, 3:-3], yb[3:-3, 3:-3])
    assert ssim(a, b, y_channel=True, crop_border=3) == pytest.approx(ref_y, rel=1e-10)
    a16, b16 = a.astype(np.uint16) * 257, b.astype(np.uint16) * 257
    assert ssim(a16, b16) == pytest.approx(ref, rel=1e-10)


def test_ssim_of_smooth_images_matches_plain_implementation():
    a, b = photo_like(40, 36, seed=1), photo_like(40, 36, seed=2)
    ref = np.mean([_reference_ssim(a[..., c].astype(float), b[..., c].astype(float)) for c in range(3)])
    assert ssim(a, b) == pytest.approx(ref, rel=1e-10)


# --- crop_border, errors ----------------------------------------------------------------------


@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_crop_border_removes_exactly_that_many_pixels(side):
    a = photo_like(30, 34)
    b = a.copy()
    ring = {"top": np.s_[:3], "bottom": np.s_[-3:], "left": np.s_[:, :3], "right": np.s_[:, -3:]}[side]
    b[ring] = 255 - b[ring]
    assert psnr(a, b, crop_border=3) == math.inf
    assert ssim(a, b, crop_border=3) == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, b, crop_border=2) < 40
    assert ssim(a, b, crop_border=2) < 1 - 1e-5  # one row under the window's faint edge weights


def test_mismatched_shapes_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"\(8, 8, 3\) vs \(8, 9, 3\)"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(16, 16, 3\) vs \(16, 16, 1\)"):
        ssim(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 1), np.uint8))
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="crop_border"):
        psnr(img, img, crop_border=-1)
    with pytest.raises(ValueError, match="crop_border"):
        psnr(img, img, crop_border=8)
    with pytest.raises(ValueError, match="11x11"):
        ssim(img, img, crop_border=3)
    with pytest.raises(ValueError, match="dtype"):
        psnr(img.astype(np.int32), img.astype(np.int32))


# --- torch versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_versions_agree_with_numpy(dtype):
    imgs = [(photo_like(32, 40, seed=3), photo_like(32, 40, seed=4)),
            (photo_like(32, 40, seed=5), np.clip(photo_like(32, 40, seed=5).astype(int) + 7, 0, 255).astype(np.uint8))]
    sr = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a, _ in imgs]).to(dtype) / 255
    hr = torch.stack([torch.from_numpy(b).permute(2, 0, 1) for _, b in imgs]).to(dtype) / 255
    for y in (False, True):
        for border in (0, 4):
            p, s = psnr_torch(sr, hr, border, y), ssim_torch(sr, hr, border, y)
            assert p.shape == s.shape == (2,)
            for i, (a, b) in enumerate(imgs):  # per image, not a batch mean
                assert float(p[i]) == pytest.approx(psnr(a, b, crop_border=border, y_channel=y), rel=1e-6)
                assert float(s[i]) == pytest.approx(ssim(a, b, crop_border=border, y_channel=y), rel=1e-6)
    assert float(psnr_torch(sr, sr)[0]) == math.inf
    assert float(ssim_torch(sr, sr)[1]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 40\) vs \(2, 3, 32, 39\)"):
        psnr_torch(sr, hr[..., :39])


# --- metrics_command --------------------------------------------------------------------------


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    sr, hr = tmp_path / "sr", tmp_path / "hr"
    for i in range(2):
        ref = np.minimum(photo_like(24, 24, seed=i), 250)  # room for +3 without clipping
        write_image(hr / "sub" / f"{i}.png", ref)
        write_image(sr / "sub" / f"{i}.tiff", ref + 3)  # other format
    return sr, hr


def test_metrics_command_json_shape(tmp_path, capsys):
    sr, hr = _folders(tmp_path)
    write_image(hr / "same.png", photo_like(20, 20, seed=9))
    write_image(sr / "same.png", photo_like(20, 20, seed=9))
    assert metrics_command(sr, hr, as_json=True) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert set(data) == {"mean", "images"} and set(data["mean"]) == {"psnr", "ssim"}
    assert [r["name"] for r in data["images"]] == ["same.png", "sub/0.png", "sub/1.png"]  # HR relative paths
    assert all(set(r) == {"name", "psnr", "ssim"} for r in data["images"])
    assert data["images"][0]["psnr"] is None and data["images"][0]["ssim"] == pytest.approx(1.0)
    assert data["images"][1]["psnr"] == pytest.approx(20 * math.log10(255 / 3), abs=1e-9)
    assert data["mean"]["psnr"] is None  # the mean includes an infinite PSNR
    assert err == ""


def test_metrics_command_reports_missing_partners_and_size_mismatch(tmp_path, capsys):
    sr, hr = _folders(tmp_path)
    write_image(hr / "only_hr.png", photo_like(16, 16))
    write_image(sr / "only_sr.png", photo_like(16, 16))
    write_image(hr / "big.png", photo_like(24, 24))
    write_image(sr / "big.png", photo_like(12, 24))
    assert metrics_command(sr, hr, as_json=True, crop_border=1, y_channel=True) == 1
    out, err = capsys.readouterr()
    assert [r["name"] for r in json.loads(out)["images"]] == ["sub/0.png", "sub/1.png"]
    lines = err.splitlines()
    assert all(line.startswith("esrforge metrics: error: ") for line in lines)
    assert any(str(hr / "only_hr.png") in line for line in lines)
    assert any(str(sr / "only_sr.png") in line for line in lines)
    assert any(str(sr / "big.png") in line and str(hr / "big.png") in line and "24x12" in line for line in lines)


def test_an_hr_not_a_multiple_of_the_scale_is_compared_mod_cropped(tmp_path, capsys):
    """Set14's 451 px wide HR gives a 112 px LR (mod-crop, as esrforge degrade and BasicSR make
    it) and a 448 px SR: the SR is compared with the HR's top-left 448 px, as BasicSR does."""
    hr = photo_like(30, 35, seed=3)
    write_image(tmp_path / "hr.png", hr)
    write_image(tmp_path / "sr.png", hr[:28, :32])
    assert metrics_command(tmp_path / "sr.png", tmp_path / "hr.png", as_json=True) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["mean"]["psnr"] is None  # identical where compared
    assert err == f"note: {tmp_path / 'hr.png'} is 35x30 with 3 channel(s); compared mod-cropped to {tmp_path / 'sr.png'}'s 32x28\n"
    write_image(tmp_path / "sr.png", hr[:22, :32])  # 8 rows short: not a mod-crop
    assert metrics_command(tmp_path / "sr.png", tmp_path / "hr.png") == 1


def test_metrics_command_leaves_hidden_files_out(tmp_path, capsys):
    """macOS's `._x.png` forks and a killed write's temporary file are not images to compare."""
    sr, hr = _folders(tmp_path)
    (sr / "sub" / "._0.tiff").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (hr / ".cache").mkdir()
    write_image(hr / ".cache" / "2.png", photo_like(24, 24))
    assert metrics_command(sr, hr, as_json=True) == 0
    out, err = capsys.readouterr()
    assert [r["name"] for r in json.loads(out)["images"]] == ["sub/0.png", "sub/1.png"] and err == ""


def test_metrics_command_table_and_single_files(tmp_path, capsys):
    sr, hr = _folders(tmp_path)
    assert metrics_command(sr, hr) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["sub/0.png", "sub/1.png", "mean"]
    assert f"{20 * math.log10(255 / 3):8.4f}" in lines[2]
    assert metrics_command(sr / "sub" / "1.tiff", hr / "sub" / "1.png", as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["images"]] == ["1.png"]
    assert data["mean"]["psnr"] == pytest.approx(20 * math.log10(255 / 3), abs=1e-9)


def test_metrics_command_user_errors_are_printed_not_raised(tmp_path, capsys):
    sr, hr = _folders(tmp_path)
    assert metrics_command(sr, tmp_path / "nope") == 1
    assert f"{tmp_path / 'nope'}: no such file or folder" in capsys.readouterr().err
    assert metrics_command(sr / "sub" / "0.tiff", hr) == 1  # file vs folder
    assert "two image files or two folders" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert metrics_command(empty, hr) == 1
    assert "no image pairs" in capsys.readouterr().err
    assert metrics_command(sr, hr, crop_border=-2) == 1
    assert "--crop-border" in capsys.readouterr().err
    (sr / "sub" / "0.tiff").write_bytes(b"not an image")
    assert metrics_command(sr, hr) == 1
    captured = capsys.readouterr()
    assert str(sr / "sub" / "0.tiff") in captured.err and "sub/1.png" in captured.out
    write_image(sr / "sub" / "1.png", photo_like(24, 24))  # sub/1 now exists twice in SR
    assert metrics_command(sr, hr) == 1
    assert "different extensions" in capsys.readouterr().err
