"""esrforge.images: channel order, bit depth, alpha, atomic writes, corrupt files, EXIF orientation."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from esrforge.images import ImageError, apply_orientation, exif_orientation, read_image, write_image
from esrforge.modelio import files as model_files

from tests.conftest import photo_like

# --- helpers ------------------------------------------------------------------------------------

# Four quadrant colours (RGB) that tell every rotation and flip apart.
TL, TR, BL, BR = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def quadrants_image(h: int = 32, w: int = 64) -> np.ndarray:
    """RGB image, left half = TL/BL, right half = TR/BR. Block edges sit on JPEG's 16 px MCUs."""
    img = np.empty((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = TL
    img[: h // 2, w // 2 :] = TR
    img[h // 2 :, : w // 2] = BL
    img[h // 2 :, w // 2 :] = BR
    return img


def quadrant_medians(img: np.ndarray) -> tuple[np.ndarray, ...]:
    """Median colour of the inner part of each quadrant (away from lossy block edges)."""
    h, w = img.shape[:2]
    qh, qw = h // 2, w // 2
    mh, mw = qh // 4, qw // 4
    out = []
    for y0 in (0, qh):
        for x0 in (0, qw):
            block = img[y0 + mh : y0 + qh - mh, x0 + mw : x0 + qw - mw].reshape(-1, img.shape[2])
            out.append(np.median(block, axis=0))
    return tuple(out)  # TL, TR, BL, BR


def assert_quadrants(img: np.ndarray, expected: tuple, tol: float = 40) -> None:
    got = quadrant_medians(img)
    for name, g, e in zip(("TL", "TR", "BL", "BR"), got, expected):
        assert np.abs(g - np.array(e)).max() <= tol, f"{name}: got {g}, expected {e}"


def tiff_orientation_ifd(orientation: int, endian: bytes = b"II") -> bytes:
    """A minimal TIFF header + IFD0 holding only the Orientation tag (0x0112, SHORT)."""
    e = "<" if endian == b"II" else ">"
    return (
        endian
        + struct.pack(e + "HI", 42, 8)
        + struct.pack(e + "H", 1)
        + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
        + struct.pack(e + "I", 0)
    )


def jpeg_with_orientation(img_rgb: np.ndarray, orientation: int, endian: bytes = b"II") -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    data = buf.tobytes()
    payload = b"Exif\x00\x00" + tiff_orientation_ifd(orientation, endian)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    assert data[:2] == b"\xff\xd8"
    return data[:2] + app1 + data[2:]  # APP1 right after SOI, where cameras put it


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_exif(img: np.ndarray, exif_body: bytes) -> bytes:
    """A cv2-encoded PNG with an eXIf chunk inserted right after IHDR (before any IDAT)."""
    ok, buf = cv2.imencode(".png", img)
    assert ok
    data = buf.tobytes()
    ihdr_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    assert data[12:16] == b"IHDR"
    return data[:ihdr_end] + png_chunk(b"eXIf", exif_body) + data[ihdr_end:]


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".partial")]


# --- reading and writing ------------------------------------------------------------------------


def test_read_image_returns_rgb_not_bgr(tmp_path: Path) -> None:
    bgr = np.zeros((5, 7, 3), np.uint8)
    bgr[..., 2] = 255  # red, in OpenCV's BGR order
    path = tmp_path / "red.png"
    assert cv2.imwrite(str(path), bgr)
    img = read_image(path)
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8
    assert (img.reshape(-1, 3) == [255, 0, 0]).all()


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff", ".webp"])
def test_8bit_rgb_round_trip_is_exact_for_lossless_formats(tmp_path: Path, ext: str) -> None:
    img = photo_like(24, 32)
    path = tmp_path / f"a{ext}"
    if ext == ".webp":
        # WebP is lossless only at quality > 100 in OpenCV.
        write_image(path, img, quality=101)
    else:
        write_image(path, img)
    back = read_image(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, img)
    assert partials(tmp_path) == []


def test_jpeg_round_trip_keeps_colours_in_rgb_order(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    write_image(path, quadrants_image(), quality=95)
    back = read_image(path)
    assert back.shape == (32, 64, 3) and back.dtype == np.uint8
    assert_quadrants(back, (TL, TR, BL, BR))  # a red/blue swap would be off by 255


def test_grayscale_file_reads_as_hxwx1(tmp_path: Path) -> None:
    gray = photo_like(10, 12, c=1)[:, :, 0]
    path = tmp_path / "g.png"
    assert cv2.imwrite(str(path), gray)  # a true 1-channel PNG
    img = read_image(path)
    assert img.shape == (10, 12, 1)
    np.testing.assert_array_equal(img[:, :, 0], gray)


def test_grayscale_round_trip_through_write_image(tmp_path: Path) -> None:
    gray = photo_like(10, 12, c=1)
    path = tmp_path / "g.png"
    write_image(path, gray)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 2  # stored as gray, not RGB
    np.testing.assert_array_equal(read_image(path), gray)


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
def test_16bit_round_trip_is_exact(tmp_path: Path, ext: str) -> None:
    img = photo_like(20, 24, dtype=np.uint16)
    assert img.max() > 255 and len(np.unique(img)) > 256  # values an 8-bit path would lose
    path = tmp_path / f"deep{ext}"
    write_image(path, img)
    back = read_image(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, img)


def test_16bit_gray_round_trip_is_exact(tmp_path: Path) -> None:
    img = photo_like(9, 11, c=1, dtype=np.uint16)
    path = tmp_path / "deep_gray.png"
    write_image(path, img)
    back = read_image(path)
    assert back.dtype == np.uint16 and back.shape == (9, 11, 1)
    np.testing.assert_array_equal(back, img)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_rgba_png_round_trip_keeps_alpha_and_order(tmp_path: Path, dtype) -> None:
    img = photo_like(12, 16, c=4, dtype=dtype)
    img[:6, :, 3] = 0  # a fully transparent band: must stay transparent
    path = tmp_path / "rgba.png"
    write_image(path, img)
    back = read_image(path)
    assert back.shape == (12, 16, 4) and back.dtype == dtype
    np.testing.assert_array_equal(back, img)
    # The file itself stores BGRA: check the channel order against OpenCV's own reader.
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(raw[..., [2, 1, 0, 3]], img)


def test_float32_is_written_as_8bit(tmp_path: Path) -> None:
    img = np.array([[[0.0, 0.5, 1.0], [-1.0, 2.0, 0.25]]], np.float32)
    path = tmp_path / "f.png"
    write_image(path, img)
    back = read_image(path)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, [[[0, 128, 255], [0, 255, 64]]])


def test_non_ascii_path(tmp_path: Path) -> None:
    img = photo_like(6, 8)
    path = tmp_path / "ünïcödé 画像" / "bild.png"
    path.parent.mkdir()
    write_image(path, img)
    np.testing.assert_array_equal(read_image(path), img)


# --- atomic writes and refused encodes ----------------------------------------------------------


def test_write_leaves_only_the_final_file(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", photo_like(8, 8))
    write_image(tmp_path / "a.png", photo_like(8, 8, seed=1))  # replacing an existing file too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), photo_like(8, 8, seed=1))


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """Not the 0600 of the temporary file: others can read an output as with a plain open()."""
    import os

    old = os.umask(0o022)
    try:
        write_image(tmp_path / "a.png", photo_like(8, 8))
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "name, img",
    [
        ("deep.jpg", photo_like(8, 8, dtype=np.uint16)),
        ("deep.webp", photo_like(8, 8, dtype=np.uint16)),
        ("deep.bmp", photo_like(8, 8, dtype=np.uint16)),
        ("alpha.jpg", photo_like(8, 8, c=4)),
        ("alpha.jpeg", photo_like(8, 8, c=4)),
        ("alpha.bmp", photo_like(8, 8, c=4)),
        ("noext", photo_like(8, 8)),
        ("odd.xyz", photo_like(8, 8)),
    ],
)
def test_unencodable_write_raises_and_leaves_nothing(tmp_path: Path, name: str, img: np.ndarray) -> None:
    path = tmp_path / name
    with pytest.raises(ImageError) as exc:
        write_image(path, img)
    assert str(path) in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_refused_write_keeps_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "keep.jpg"
    write_image(path, photo_like(8, 8))
    before = path.read_bytes()
    with pytest.raises(ImageError):
        write_image(path, photo_like(8, 8, dtype=np.uint16))
    assert path.read_bytes() == before
    assert partials(tmp_path) == []


def test_failure_while_writing_keeps_old_file_and_no_partial(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.png"
    write_image(path, photo_like(8, 8))
    before = path.read_bytes()

    def fail_replace(src, dst):  # the rename that would publish the new file fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_files.os, "replace", fail_replace)
    with pytest.raises(OSError):
        write_image(path, photo_like(8, 8, seed=3))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# --- unreadable files ---------------------------------------------------------------------------


def test_random_bytes_raise_image_error_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError) as exc:
        read_image(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_png_raises_image_error(tmp_path: Path, keep: float) -> None:
    ok, buf = cv2.imencode(".png", photo_like(24, 32))
    data = buf.tobytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageError) as exc:
        read_image(path)
    assert str(path) in str(exc.value)


def test_empty_and_missing_files_raise_image_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    for path in (empty, missing):
        with pytest.raises(ImageError) as exc:
            read_image(path)
        assert str(path) in str(exc.value)


# --- EXIF orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, shape, expected",
    [
        (1, (32, 64), (TL, TR, BL, BR)),
        # 6: stored rotated, displayed after a 90 degree clockwise turn; the left half goes on top.
        (6, (64, 32), (BL, TL, BR, TR)),
        # 3: 180 degrees.
        (3, (32, 64), (BR, BL, TR, TL)),
        # 8: 90 degrees counter-clockwise; the left half goes to the bottom.
        (8, (64, 32), (TR, BR, TL, BL)),
    ],
)
@pytest.mark.parametrize("endian", [b"II", b"MM"])
def test_jpeg_exif_orientation_is_applied(tmp_path: Path, orientation: int, shape, expected, endian: bytes) -> None:
    data = jpeg_with_orientation(quadrants_image(), orientation, endian)
    assert exif_orientation(data) == orientation
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(data)
    img = read_image(path)
    assert img.shape == shape + (3,)
    assert img.flags["C_CONTIGUOUS"]
    assert_quadrants(img, expected)


def test_jpeg_without_exif_is_orientation_1() -> None:
    ok, buf = cv2.imencode(".jpg", quadrants_image())
    assert exif_orientation(buf.tobytes()) == 1


@pytest.mark.parametrize("prefix", [b"", b"Exif\x00\x00"])
def test_png_exif_chunk_orientation(tmp_path: Path, prefix: bytes) -> None:
    # 16-bit RGBA: OpenCV itself never rotates IMREAD_UNCHANGED reads, so this is our code alone.
    img = np.zeros((4, 6, 4), np.uint16)
    img[..., 3] = 65535
    img[:, :3, 0] = 1000  # left half marked in the red channel
    img[0, 0, 1] = 7  # a single corner pixel: tells rotations from flips
    bgra = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    data = png_with_exif(bgra, prefix + tiff_orientation_ifd(6))
    assert exif_orientation(data) == 6
    path = tmp_path / "o6.png"
    path.write_bytes(data)
    back = read_image(path)
    assert back.shape == (6, 4, 4) and back.dtype == np.uint16
    assert (back[:3, :, 0] == 1000).all() and (back[3:, :, 0] == 0).all()  # left half now on top
    assert back[0, 3, 1] == 7  # top-left corner went to the top-right under a clockwise turn
    np.testing.assert_array_equal(back, np.rot90(img, -1))


def test_png_without_exif_chunk_is_orientation_1() -> None:
    ok, buf = cv2.imencode(".png", quadrants_image())
    assert exif_orientation(buf.tobytes()) == 1


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xe1\x00", b"\x89PNG\r\n\x1a\n\x00\x00", b"garbage"])
def test_exif_orientation_tolerates_short_or_odd_data(data: bytes) -> None:
    assert exif_orientation(data) == 1


def test_apply_orientation_all_eight_are_inverse_of_exif_transforms() -> None:
    # Upright image U; a camera stores S such that displaying S with orientation o gives U.
    u = np.arange(2 * 3).reshape(2, 3)
    stored = {
        1: u,
        2: u[:, ::-1],
        3: u[::-1, ::-1],
        4: u[::-1],
        5: u.T,  # transpose: its own inverse
        6: np.rot90(u, 1),  # camera turned clockwise: stored counter-clockwise
        7: u[::-1, ::-1].T,  # transverse: its own inverse
        8: np.rot90(u, -1),
    }
    for o, s in stored.items():
        np.testing.assert_array_equal(apply_orientation(s, o), u, err_msg=f"orientation {o}")
