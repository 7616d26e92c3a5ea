import json
import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from esrforge.cli import main
from esrforge.images import write_image
from esrforge.metrics import psnr, psnr_torch, rgb_to_y, ssim, ssim_torch
from tests.conftest import photo_like


def test_psnr_known_values():
    a = np.full((16, 16, 3), 100, np.uint8)
    for d in (1, 5, 20):
        assert psnr(a, a + d) == pytest.approx(20 * math.log10(255 / d), abs=1e-9)
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    # 16-bit images are compared on the same 0-255 scale
    b16 = (a.astype(np.uint16) * 257)
    assert psnr(b16, b16 + 257 * 5) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)


def test_y_channel_known_values():
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], np.uint8)
    y = rgb_to_y(px)[0, :, 0]
    assert y == pytest.approx([235.0, 16.0, 16 + 65.481], abs=1e-9)


def _reference_ssim(x, y):
    """A plain float64 SSIM: explicit Gaussian window, valid sliding windows."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    def filt(img):
        return np.einsum("ijkl,kl->ij", sliding_window_view(img, (11, 11)), w)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    return np.mean(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))


def test_ssim_matches_a_plain_implementation():
    a, b = photo_like(40, 36, seed=1), photo_like(40, 36, seed=2)
    ref = np.mean([_reference_ssim(a[..., c].astype(float), b[..., c].astype(float)) for c in range(3)])
    assert ssim(a, b) == pytest.approx(ref, abs=1e-10)
    ya, yb = rgb_to_y(a)[..., 0], rgb_to_y(b)[..., 0]
    assert ssim(a, b, y_channel=True, crop_border=4) == pytest.approx(_reference_ssim(ya[4:-4, 4:-4], yb[4:-4, 4:-4]), abs=1e-10)


def test_crop_border_removes_exactly_that_many_pixels():
    a = photo_like(30, 30)
    b = a.copy()
    b[:3] = 0
    b[:, -3:] = 0
    assert psnr(a, b, crop_border=3) == math.inf
    assert psnr(a, b, crop_border=2) < 40


def test_torch_versions_agree():
    a, b = photo_like(32, 40, seed=3), photo_like(32, 40, seed=4)
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].double() / 255
    for y in (False, True):
        assert float(psnr_torch(ta, tb, 4, y)[0]) == pytest.approx(psnr(a, b, crop_border=4, y_channel=y), rel=1e-9)
        assert float(ssim_torch(ta, tb, 4, y)[0]) == pytest.approx(ssim(a, b, crop_border=4, y_channel=y), rel=1e-6)


def test_shape_mismatch_refused():
    with pytest.raises(ValueError, match=r"\(8, 8, 3\) vs \(8, 9, 3\)"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


def test_metrics_command_folders_and_json(tmp_path, capsys):
    for i in range(3):
        hr = photo_like(24, 24, seed=i)
        write_image(tmp_path / "hr" / "sub" / f"{i}.png", hr)
        if i < 2:
            write_image(tmp_path / "sr" / "sub" / f"{i}.png", np.clip(hr.astype(int) + 3, 0, 255).astype(np.uint8))
    write_image(tmp_path / "sr" / "sub" / "2.png", photo_like(20, 24))  # wrong size
    rc = main(["metrics", str(tmp_path / "sr"), str(tmp_path / "hr"), "--json", "--crop-border", "2", "--y-channel"])
    out, err = capsys.readouterr()
    assert rc == 1 and "2.png" in err
    data = json.loads(out)
    assert [r["name"] for r in data["images"]] == ["sub/0.png", "sub/1.png"]
    assert set(data["mean"]) == {"psnr", "ssim"} and data["mean"]["psnr"] > 30
    (tmp_path / "sr" / "sub" / "2.png").unlink()
    (tmp_path / "hr" / "sub" / "2.png").unlink()
    assert main(["metrics", str(tmp_path / "sr"), str(tmp_path / "hr")]) == 0
    assert "mean" in capsys.readouterr().out


def test_metrics_single_files_identical_gives_null_psnr(tmp_path, capsys):
    img = photo_like(20, 20)
    write_image(tmp_path / "a.png", img)
    write_image(tmp_path / "b.png", img)
    assert main(["metrics", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["images"][0]["psnr"] is None and data["images"][0]["ssim"] == pytest.approx(1.0)
