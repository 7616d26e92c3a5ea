"""esrforge.images: channel order, bit depth, alpha, atomic writes, corrupt files, EXIF orientation."""

from __future__ import annotations

import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from esrforge import images
from esrforge.images import IMAGE_SUFFIXES, ImageError, ImageMetadata, apply_orientation, exif_orientation, read_image, write_image
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


# How a camera stores an upright image U under each EXIF orientation: displaying STORED[o](U)
# with orientation o gives U back.
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],
    3: lambda u: u[::-1, ::-1],
    4: lambda u: u[::-1],
    5: lambda u: u.swapaxes(0, 1),  # transpose: its own inverse
    6: lambda u: np.rot90(u, 1),  # camera turned clockwise: stored counter-clockwise
    7: lambda u: u[::-1, ::-1].swapaxes(0, 1),  # transverse: its own inverse
    8: lambda u: np.rot90(u, -1),
}


def tiff_with_orientation(img: np.ndarray, orientation: int) -> bytes:
    """cv2's TIFF of `img` (RGB or gray) plus an Orientation tag: IFD0 is rewritten at the file's end."""
    ok, buf = cv2.imencode(".tiff", img if img.shape[2] == 1 else img[..., [2, 1, 0, 3][: img.shape[2]]])
    assert ok
    data = buf.tobytes()
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    entries = [data[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(n)]
    entries = [e for e in entries if e[:2] != b"\x12\x01"]  # drop any Orientation cv2 wrote
    entries.append(struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0))
    entries.sort(key=lambda e: struct.unpack("<H", e[:2])[0])  # TIFF wants tags in ascending order
    next_ifd = data[ifd + 2 + 12 * n : ifd + 6 + 12 * n]
    data += b"\x00" * (len(data) % 2)  # an IFD starts on a word boundary
    new_ifd = struct.pack("<H", len(entries)) + b"".join(entries) + next_ifd
    return data[:4] + struct.pack("<I", len(data)) + data[8:] + new_ifd


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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_alpha_png_round_trip_stays_gray_alpha(tmp_path: Path, dtype) -> None:
    img = photo_like(300, 17, c=2, dtype=dtype)  # taller than one compressed block of rows
    img[:40, :, 1] = 0
    path = tmp_path / "la.png"
    write_image(path, img)
    head = path.read_bytes()[:29]
    assert head[12:16] == b"IHDR" and head[24:26] == bytes([16 if dtype == np.uint16 else 8, 4])  # depth, gray + alpha
    back = read_image(path)
    assert back.shape == (300, 17, 2) and back.dtype == dtype
    np.testing.assert_array_equal(back, img)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["la.png"]  # no temporary file left


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gray_png_with_a_transparent_level_reads_as_gray_alpha(tmp_path: Path, dtype) -> None:
    gray = photo_like(8, 9, c=1, dtype=dtype)
    key = int(gray[3, 4, 0])
    ok, buf = cv2.imencode(".png", gray)
    png = buf.tobytes()
    trns = struct.pack(">I", 2) + b"tRNS" + struct.pack(">H", key)
    trns += struct.pack(">I", zlib.crc32(trns[4:]))
    (tmp_path / "t.png").write_bytes(png[:33] + trns + png[33:])  # right after IHDR
    back = read_image(tmp_path / "t.png")
    assert back.shape == (8, 9, 2) and back.dtype == dtype
    np.testing.assert_array_equal(back[..., :1], gray)
    np.testing.assert_array_equal(back[..., 1] == 0, gray[..., 0] == key)
    assert (back[..., 1][gray[..., 0] != key] == np.iinfo(dtype).max).all()


def test_gray_alpha_becomes_rgba_where_the_format_has_no_gray_alpha(tmp_path: Path) -> None:
    img = photo_like(10, 12, c=2)
    write_image(tmp_path / "la.tiff", img)
    back = read_image(tmp_path / "la.tiff")
    np.testing.assert_array_equal(back, np.dstack([img[..., :1]] * 3 + [img[..., 1:]]))
    with pytest.raises(ImageError, match="cannot store an alpha channel"):
        write_image(tmp_path / "la.jpg", img)


def alpha_tiff(img: np.ndarray, order: str, extra_samples: int | None, photometric: int | None = None) -> bytes:
    """An uncompressed 8-bit (16-bit for uint16 `img`) gray + alpha or RGBA TIFF whose last sample
    is declared by an ExtraSamples tag (0 unspecified, 1 associated, 2 unassociated alpha); None
    leaves the tag out, as a CMYK file (photometric 5) does."""
    h, w, c = img.shape
    depth = 16 if img.dtype == np.uint16 else 8
    n = 11 if extra_samples is not None else 10
    bits_at = 8 + 2 + 12 * n + 4
    bits = struct.pack(order + f"{c}H", *[depth] * c)
    data_at = bits_at + (len(bits) if c > 2 else 0)
    tags = [  # (tag, type: 3 SHORT / 4 LONG, count, value or offset), ascending
        (256, 3, 1, w), (257, 3, 1, h), (258, 3, c, bits_at), (259, 3, 1, 1),
        (262, 3, 1, photometric if photometric is not None else 2 if c > 2 else 1),
        (273, 4, 1, data_at), (277, 3, 1, c), (278, 3, 1, h), (279, 4, 1, img.size * depth // 8), (284, 3, 1, 1), (338, 3, 1, extra_samples),
    ][:n]
    ifd = b"".join(
        struct.pack(order + "HHI", tag, typ, cnt)
        + (bits if tag == 258 and c <= 2 else struct.pack(order + "HH", v, 0) if typ == 3 and cnt == 1 else struct.pack(order + "I", v))
        for tag, typ, cnt, v in tags
    )
    magic = b"II" if order == "<" else b"MM"
    return (magic + struct.pack(order + "HIH", 42, 8, n) + ifd + struct.pack(order + "I", 0)
            + (bits if c > 2 else b"") + img.astype(order + ("u2" if depth == 16 else "u1")).tobytes())


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("extra_samples", [0, 2])  # unspecified, unassociated alpha (GIMP, Photoshop)
def test_rgba_tiff_with_alpha_tag_reads_unpremultiplied(tmp_path: Path, order: str, extra_samples: int) -> None:
    img = photo_like(6, 7, c=4)
    img[..., 3] = np.arange(42, dtype=np.uint8).reshape(6, 7) * 6  # alpha from 0 to 246
    path = tmp_path / "a.tif"
    path.write_bytes(alpha_tiff(img, order, extra_samples))
    before = path.read_bytes()
    np.testing.assert_array_equal(read_image(path), img)
    assert path.read_bytes() == before  # the tag is changed in memory only


@pytest.mark.parametrize("order", ["<", ">"])
def test_rgba_tiff_with_associated_alpha_reads_as_straight_alpha(tmp_path: Path, order: str) -> None:
    # ExtraSamples 1: the colour is stored premultiplied; esrforge (and every file it writes) takes
    # alpha as straight, so the colour is divided back out, not shown darkened.
    straight = photo_like(6, 7, c=4)
    straight[..., 3] = np.arange(42, dtype=np.uint8).reshape(6, 7) * 6 + 4  # alpha from 4 to 250
    straight[0, 0, 3] = 0
    stored = straight.copy()
    stored[..., :3] = np.rint(straight[..., :3] * (straight[..., 3:] / 255.0))
    path = tmp_path / "assoc.tif"
    path.write_bytes(alpha_tiff(stored, order, 1))
    back = read_image(path)
    np.testing.assert_array_equal(back[..., 3], straight[..., 3])
    assert (back[0, 0, :3] == 0).all()  # no colour under alpha 0
    visible = straight[..., 3] > 0
    err = np.abs(back[..., :3].astype(int) - straight[..., :3])[visible]
    # within the premultiplied sample's rounding: half a level, magnified by 255 / alpha
    assert (err <= np.ceil(0.5 * 255 / straight[..., 3][visible])[:, None] + 1).all()


def test_gray_alpha_tiff_warns_that_opencv_drops_its_alpha(tmp_path: Path) -> None:
    img = photo_like(6, 7, c=2)
    (tmp_path / "la.tif").write_bytes(alpha_tiff(img, "<", 2))
    with pytest.warns(UserWarning, match="la.tif: OpenCV reads gray \\+ alpha TIFFs without their alpha; save as PNG"):
        back = read_image(tmp_path / "la.tif")
    np.testing.assert_array_equal(back, img[..., :1])
    (tmp_path / "la16.tif").write_bytes(alpha_tiff(photo_like(6, 7, c=2, dtype=np.uint16), "<", 2))
    with pytest.warns(UserWarning, match="la16.tif: .* without their alpha, and its 16-bit samples as 8-bit; save as PNG"):
        assert read_image(tmp_path / "la16.tif").dtype == np.uint8


@pytest.mark.parametrize("order", ["<", ">"])
def test_cmyk_tiff_reads_as_rgb_without_an_alpha_it_never_had(tmp_path: Path, order: str) -> None:
    cmyk = photo_like(6, 7, c=4)
    (tmp_path / "c.tif").write_bytes(alpha_tiff(cmyk, order, None, photometric=5))
    back = read_image(tmp_path / "c.tif")
    ink = 1 - cmyk.astype(np.float64) / 255
    expected = 255 * ink[..., :3] * ink[..., 3:]  # each colour under its ink and the black
    assert back.shape == (6, 7, 3) and np.abs(back - expected).max() <= 1


@pytest.mark.parametrize("ext", [".webp", ".png"])
def test_an_animated_image_warns_that_only_its_first_frame_is_read(tmp_path: Path, ext: str) -> None:
    if not hasattr(cv2, "Animation"):
        pytest.skip("this OpenCV writes no animations (4.11 is the first)")
    anim = cv2.Animation()
    frames = [photo_like(8, 10, seed=i)[..., ::-1].copy() for i in range(3)]  # OpenCV's BGR
    anim.frames, anim.durations = frames, [100] * 3
    ok, buf = cv2.imencodeanimation(ext, anim)
    assert ok
    path = tmp_path / f"a{ext}"
    path.write_bytes(buf.tobytes())
    with pytest.warns(UserWarning, match=f"a{ext}: an animated image; only its first frame is read"):
        first = read_image(path)
    dist = [np.abs(first.astype(int) - f[..., ::-1]).mean() for f in frames]  # lossy WebP: nearest, not equal
    assert dist[0] == min(dist) and (ext == ".webp" or dist[0] == 0)
    write_image(tmp_path / "still.webp", photo_like(8, 10))
    write_image(tmp_path / "still.png", photo_like(8, 10))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "still.webp"), read_image(tmp_path / "still.png")


@pytest.mark.parametrize("ext", [".tif", ".tiff"])
@pytest.mark.parametrize("c", [1, 3])
def test_float32_tiff_round_trip_keeps_float(tmp_path: Path, ext: str, c: int) -> None:
    img = np.random.default_rng(0).random((9, 13, c), dtype=np.float32)
    img[0, 0] = 1 / 3  # not a multiple of 1/255: an 8-bit detour would change it
    path = tmp_path / f"f{ext}"
    write_image(path, img)
    back = read_image(path)
    assert back.dtype == np.float32 and back.shape == img.shape
    np.testing.assert_array_equal(back, img)


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
        ("alpha.jpg", photo_like(8, 8, c=4)),
        ("alpha16.jpg", photo_like(8, 8, c=4, dtype=np.uint16)),
        ("alpha.jpeg", photo_like(8, 8, c=4)),
        ("alpha.bmp", photo_like(8, 8, c=4)),
        ("noext", photo_like(8, 8)),
        ("odd.xyz", photo_like(8, 8)),
        ("wide.jpg", np.zeros((8, 70000, 3), np.uint8)),  # over JPEG's 65500 px: OpenCV refuses
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
        write_image(path, photo_like(8, 8, c=4))
    assert path.read_bytes() == before
    assert partials(tmp_path) == []


@pytest.mark.parametrize(
    "ext, c",  # alpha into jpg/bmp stays refused: test_unencodable_write_raises_and_leaves_nothing
    [(ext, c) for ext in (".jpg", ".jpeg", ".webp", ".bmp") for c in (1, 3, 4) if c < 4 or ext == ".webp"],
)
def test_16bit_into_8bit_format_is_converted(tmp_path: Path, ext: str, c: int) -> None:
    """As an image editor's "save as JPEG": round(x / 257), not an error."""
    img = photo_like(16, 24, c=c, dtype=np.uint16)
    img[0, :4, 0] = [0, 128, 129, 65535]  # around a rounding boundary: 128/257 < 0.5 < 129/257
    orig = img.copy()
    path = tmp_path / f"deep{ext}"
    write_image(path, img, quality=101 if ext == ".webp" else 95)  # WebP: lossless above 100
    np.testing.assert_array_equal(img, orig)  # the caller's array is untouched
    want = np.round(orig / 257).astype(np.uint8)
    assert want[0, :4, 0].tolist() == [0, 0, 1, 255]
    # The same file as writing those 8-bit values, lossy JPEG included.
    write_image(tmp_path / f"want{ext}", want, quality=101 if ext == ".webp" else 95)
    assert path.read_bytes() == (tmp_path / f"want{ext}").read_bytes()
    if ext != ".jpg" and ext != ".jpeg":
        back = read_image(path)
        assert back.dtype == np.uint8
        np.testing.assert_array_equal(back[..., :c], want)  # (WebP has no gray: it comes back RGB)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_write_leaves_callers_array_unchanged(tmp_path: Path, dtype) -> None:
    img = photo_like(8, 8, c=4) if dtype == np.uint8 else photo_like(8, 8, c=4, dtype=np.uint16)
    if dtype == np.float32:
        img = img.astype(np.float32) / 65535
    orig = img.copy()
    write_image(tmp_path / "a.webp", img)
    write_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(img, orig)


def test_write_peak_memory_is_the_bgr_copy_only(tmp_path: Path) -> None:
    """OpenCV encodes straight into the file: no copy of the encoded image in memory, let alone two.

    tracemalloc sees numpy's allocations (the BGR copy, an imencode result, bytes), not OpenCV's own.
    """
    img = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)  # noise: PNG ~ raw size
    path = tmp_path / "big.png"
    write_image(path, img)  # warm up: imports, codec tables
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        write_image(path, img)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 0.9 * img.nbytes  # so that a copy of the file would show
    assert peak <= img.nbytes + 64 * 1024, (peak, img.nbytes)


@pytest.mark.parametrize("ext", IMAGE_SUFFIXES)
def test_write_does_not_encode_in_memory(tmp_path: Path, monkeypatch, ext: str) -> None:
    # Also shows that each format's completeness check accepts what OpenCV writes.
    def no_imencode(*args, **kwargs):
        raise AssertionError("imencode called")

    monkeypatch.setattr(images.cv2, "imencode", no_imencode)
    img = photo_like(13, 21)  # odd sizes: BMP row padding, RIFF padding
    write_image(tmp_path / f"a{ext}", img, quality=101 if ext == ".webp" else 95)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"a{ext}"]
    assert read_image(tmp_path / f"a{ext}").shape == img.shape


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".bmp"])
@pytest.mark.parametrize("failure", ["short", "refused"])
def test_write_falls_back_to_encoding_in_memory(tmp_path: Path, monkeypatch, ext: str, failure: str) -> None:
    """A file OpenCV left short (its unchecked final flush failed) or could not open (a non-ASCII
    path on Windows) is not published; the in-memory encoder writes it instead."""
    real = cv2.imwrite

    def imwrite(name, img, params):
        if failure == "refused":
            return False
        assert real(name, img, params)
        with open(name, "r+b") as f:
            f.truncate(Path(name).stat().st_size - 1)
        return True

    monkeypatch.setattr(images.cv2, "imwrite", imwrite)
    img = photo_like(12, 20)
    path = tmp_path / f"a{ext}"
    write_image(path, img, quality=101 if ext == ".webp" else 95)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else [cv2.IMWRITE_JPEG_QUALITY, 95]
    if ext == ".png" and hasattr(cv2, "IMWRITE_PNG_FILTER"):  # esrforge's PNG settings
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                  cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
    ok, buf = cv2.imencode(ext, cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
    assert ok and path.read_bytes() == buf.tobytes()  # the whole file, as the in-memory encoder makes it


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


def test_png_over_opencv_pixel_limit_raises_image_error(tmp_path: Path) -> None:
    """OpenCV raises cv2.error (not None) for such a header; a folder run must go on past it."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # 10^10 px RGB, over the 2^30 limit
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
                     + png_chunk(b"IEND", b""))
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
    with pytest.raises(ImageError, match="empty.png: empty file \\(0 bytes\\)"):
        read_image(empty)


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


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("dtype, c", [(np.uint8, 3), (np.uint16, 3), (np.uint8, 1), (np.uint16, 4)])
def test_tiff_orientation_is_applied_once(tmp_path: Path, orientation: int, dtype, c: int) -> None:
    # Whether OpenCV turns TIFFs upright itself under IMREAD_UNCHANGED depends on its version
    # (5 does, 4 does not); either way the result must be upright exactly once.
    upright = photo_like(12, 20, c=c, dtype=dtype)
    data = tiff_with_orientation(np.ascontiguousarray(STORED[orientation](upright)), orientation)
    assert exif_orientation(data) == orientation
    path = tmp_path / f"o{orientation}.tif"
    path.write_bytes(data)
    back = read_image(path)
    assert back.dtype == dtype and back.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(back, upright)


def tiff_orientation_reset_to_1(buf: np.ndarray) -> np.ndarray:
    """The same TIFF with IFD0's Orientation set to 1: what a decoder that ignores the tag sees."""
    data = bytearray(buf.tobytes())
    if data[:4] == b"II*\x00":
        (ifd,) = struct.unpack_from("<I", data, 4)
        (n,) = struct.unpack_from("<H", data, ifd)
        for off in range(ifd + 2, ifd + 2 + 12 * n, 12):
            if struct.unpack_from("<H", data, off)[0] == 0x0112:
                struct.pack_into("<H", data, off + 8, 1)
    return np.frombuffer(data, np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_with_an_opencv_that_ignores_it(tmp_path: Path, monkeypatch, orientation: int) -> None:
    # OpenCV 4 returns IMREAD_UNCHANGED TIFFs as stored; the result must not depend on the version.
    real = cv2.imdecode
    monkeypatch.setattr(images.cv2, "imdecode", lambda buf, flags: real(tiff_orientation_reset_to_1(buf), flags))
    upright = photo_like(12, 20)
    path = tmp_path / f"o{orientation}.tif"
    path.write_bytes(tiff_with_orientation(np.ascontiguousarray(STORED[orientation](upright)), orientation))
    np.testing.assert_array_equal(read_image(path), upright)


def tiled_tiff(img: np.ndarray, tile: int, orientation: int) -> bytes:
    """An uncompressed 8-bit RGB TIFF stored in `tile` x `tile` tiles, with an Orientation tag."""
    h, w, _ = img.shape
    across, down = -(-w // tile), -(-h // tile)
    padded = np.zeros((down * tile, across * tile, 3), np.uint8)
    padded[:h, :w] = img
    tiles = [padded[y : y + tile, x : x + tile].tobytes() for y in range(0, down * tile, tile) for x in range(0, across * tile, tile)]
    n = 13
    extra_at = 8 + 2 + 12 * n + 4  # bits per sample, then the tile offsets and byte counts
    offsets_at, counts_at = extra_at + 6, extra_at + 6 + 4 * len(tiles)
    data_at = counts_at + 4 * len(tiles)
    offsets = [data_at + i * len(tiles[0]) for i in range(len(tiles))]
    tags = [  # (tag, type: 3 SHORT / 4 LONG, count, value or offset), ascending
        (256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, extra_at), (259, 3, 1, 1), (262, 3, 1, 2),
        (274, 3, 1, orientation), (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile),
        (324, 4, len(tiles), offsets_at), (325, 4, len(tiles), counts_at), (339, 3, 1, 1),  # unsigned integers
    ]
    ifd = b"".join(
        struct.pack("<HHI", t, k, c) + (struct.pack("<HH", v, 0) if k == 3 and c == 1 else struct.pack("<I", v))
        for t, k, c, v in tags
    )
    extra = struct.pack("<3H", 8, 8, 8) + struct.pack(f"<{len(tiles)}I", *offsets) + struct.pack(f"<{len(tiles)}I", *[len(t) for t in tiles])
    return b"II" + struct.pack("<HIH", 42, 8, n) + ifd + struct.pack("<I", 0) + extra + b"".join(tiles)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiled_tiff_orientation(tmp_path: Path, orientation: int) -> None:
    # OpenCV 5 mirrored each 32 x 32 tile of an 8-bit tiled TIFF in place for orientations 2, 3, 6, 7.
    upright = photo_like(36, 40)
    path = tmp_path / f"t{orientation}.tif"
    path.write_bytes(tiled_tiff(np.ascontiguousarray(STORED[orientation](upright)), 32, orientation))
    np.testing.assert_array_equal(read_image(path), upright)
    (tmp_path / "as_stored.tif").write_bytes(tiled_tiff(np.ascontiguousarray(STORED[orientation](upright)), 32, 1))
    np.testing.assert_array_equal(read_image(tmp_path / "as_stored.tif"), STORED[orientation](upright))  # the tiles decode


def test_png_without_exif_chunk_is_orientation_1() -> None:
    ok, buf = cv2.imencode(".png", quadrants_image())
    assert exif_orientation(buf.tobytes()) == 1


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xe1\x00", b"\x89PNG\r\n\x1a\n\x00\x00", b"garbage"])
def test_exif_orientation_tolerates_short_or_odd_data(data: bytes) -> None:
    assert exif_orientation(data) == 1


def test_apply_orientation_all_eight_are_inverse_of_exif_transforms() -> None:
    # Upright image U; a camera stores S such that displaying S with orientation o gives U.
    u = np.arange(2 * 3).reshape(2, 3)
    for o, store in STORED.items():
        np.testing.assert_array_equal(apply_orientation(store(u), o), u, err_msg=f"orientation {o}")


@pytest.mark.parametrize("img", [np.zeros((4, 4, 3)), np.zeros((4, 4, 3), np.int64), [[1, 2]]], ids=["float64", "int64", "list"])
def test_write_refuses_sample_types_it_cannot_store_in_one_line(tmp_path: Path, img) -> None:
    with pytest.raises(ImageError, match="cannot write .*; give H x W \\(x C\\) uint8, uint16, or float32 in \\[0, 1\\]"):
        write_image(tmp_path / "x.png", img)
    assert not list(tmp_path.iterdir())


def test_writing_float_samples_outside_0_1_warns(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="x.png: float samples range from 0 to 200"):
        write_image(tmp_path / "x.png", np.linspace(0, 200, 48, dtype=np.float32).reshape(4, 4, 3))


def test_image_io_is_light_and_leaves_opencv_settings_alone(tmp_path: Path) -> None:
    """An embedding program importing esrforge.images gets neither torch nor a changed OpenCV log
    level; the esrforge command silences OpenCV's own lines, as it names each bad file itself."""
    import subprocess
    import sys

    probe = ("import cv2, sys; level = getattr(getattr(cv2.utils, 'logging', None), 'getLogLevel', None) or cv2.getLogLevel; "
             "before = level(); import esrforge.images; print('torch' in sys.modules, level() == before)")  # OpenCV 4.13+ | older
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
    good = cv2.imencode(".png", photo_like(16, 16))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(good[:50] + bytes(20) + good[70:])  # zeros inside the image data
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENCV_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-m", "esrforge", "upscale", str(tmp_path / "cut.png"), "-o", str(tmp_path / "o.png"),
                          "-m", "photo_x4", "-q"], capture_output=True, text=True, env=env)
    ours = [line for line in run.stderr.splitlines() if not line.startswith("libpng ")]  # OpenCV < 4.13's libpng prints its own
    assert run.returncode == 1 and ours == [f"error: {tmp_path / 'cut.png'}: not a readable image (corrupt or unsupported format)"]


def test_infinities_are_clipped_and_nans_zeroed_as_the_warning_says(tmp_path: Path) -> None:
    img = np.full((2, 3, 3), 0.5, np.float32)
    img[0, 0], img[0, 1], img[0, 2] = np.inf, np.nan, -np.inf
    assert cv2.imwrite(str(tmp_path / "f.tiff"), img, [cv2.IMWRITE_TIFF_COMPRESSION, 1])  # not OpenCV 4's lossy SGILOG
    with pytest.warns(UserWarning, match=r"f.tiff: 6 infinite sample\(s\) clipped to 0 or 1; 3 NaN sample\(s\) set to 0"):
        back = read_image(tmp_path / "f.tiff")
    np.testing.assert_array_equal(back[0, :, 0], [1.0, 0.0, 0.0])


# --- ICC colour profiles ---------------------------------------------------------------------------


def icc(space: bytes = b"RGB ", extra: int = 256) -> bytes:
    """A structurally valid ICC profile (header, D50 illuminant, no tags) for `space`, padded by
    `extra` bytes (libpng checks the header and calls shorter ones "too short")."""
    size = 132 + extra
    header = struct.pack(">I", size) + b"none" + b"\x04\x40\x00\x00" + b"mntr" + space + b"XYZ " + bytes(12)
    header += b"acsp" + bytes(68 - 40) + struct.pack(">3I", 0xF6D6, 0x10000, 0xD32D) + bytes(128 - 80)
    return header + bytes(4) + bytes(range(256)) * (extra // 256) + bytes(extra % 256)  # tag count 0


@pytest.mark.parametrize("extra", [256, 200_000])  # 200 KB: four APP2 segments in a JPEG
@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tiff"])
@pytest.mark.parametrize("c", [3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_icc_profile_is_written_into_every_format_and_read_back(tmp_path: Path, ext, c, dtype, extra) -> None:
    if ext == ".jpg" and c == 4:
        return
    profile = icc(extra=extra)
    img = photo_like(20, 30, c, dtype=dtype)
    write_image(tmp_path / f"with{ext}", img, metadata=ImageMetadata(icc_profile=profile))
    write_image(tmp_path / f"without{ext}", img)
    back, meta = images.read_image_and_metadata(tmp_path / f"with{ext}")
    got = meta.icc_profile
    assert got == profile
    np.testing.assert_array_equal(back, read_image(tmp_path / f"without{ext}"))  # the pixels are untouched
    assert images.read_image_and_metadata(tmp_path / f"without{ext}")[1].icc_profile is None
    assert partials(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == [f"with{ext}", f"without{ext}"]
    pil = pytest.importorskip("PIL.Image")  # another decoder finds the profile where it belongs
    with pil.open(tmp_path / f"with{ext}") as im:
        im.load()
        assert im.info.get("icc_profile") == profile and im.size == (30, 20)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_icc_profile_on_gray_and_gray_alpha(tmp_path: Path, ext) -> None:
    for c in (1, 2):
        img = photo_like(20, 30, c)
        path = tmp_path / f"g{c}{ext}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            write_image(path, img, metadata=ImageMetadata(icc_profile=icc(b"GRAY")))
        if c == 2 and ext == ".tiff":  # stored as RGBA, which a gray profile cannot describe
            assert images.read_image_and_metadata(path)[1].icc_profile is None
            assert "written without the GRAY colour profile, which does not describe RGB images" in str(caught[0].message)
        else:
            assert images.read_image_and_metadata(path)[1].icc_profile == icc(b"GRAY") and not caught


@pytest.mark.parametrize("kind", ["png", "jpg", "webp", "webp-lossless", "tiff", "tiff-lzw"])
def test_icc_profile_is_read_from_files_other_programs_write(tmp_path: Path, kind: str) -> None:
    pil = pytest.importorskip("PIL.Image")
    profile = icc(extra=150_000)
    ext, _, variant = kind.partition("-")
    path = tmp_path / f"in.{ext}"
    options = {"lossless": True} if variant == "lossless" else {"compression": "tiff_lzw"} if variant else {}
    pil.fromarray(photo_like(20, 30)).save(path, icc_profile=profile, **options)
    img, meta = images.read_image_and_metadata(path)
    got = meta.icc_profile
    assert got == profile and img.shape == (20, 30, 3)


def test_a_profile_that_does_not_fit_the_image_is_left_out_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"out\.png: written without the CMYK colour profile, which does not describe RGB images"):
        write_image(tmp_path / "out.png", photo_like(8, 8), metadata=ImageMetadata(icc_profile=icc(b"CMYK")))
    assert images.read_image_and_metadata(tmp_path / "out.png")[1].icc_profile is None
    with pytest.warns(UserWarning, match="GRAY colour profile, which does not describe RGB images"):  # WebP has no gray
        write_image(tmp_path / "gray.webp", photo_like(8, 8, 1), metadata=ImageMetadata(icc_profile=icc(b"GRAY")))
    with pytest.raises(ImageError, match=r"bad\.png: the icc_profile given is not an ICC profile"):
        write_image(tmp_path / "bad.png", photo_like(8, 8), metadata=ImageMetadata(icc_profile=b"not a profile" * 20))
    assert not (tmp_path / "bad.png").exists()


def test_a_damaged_profile_in_a_file_is_no_profile_and_the_pixels_still_read(tmp_path: Path) -> None:
    img = photo_like(8, 8)
    ok, png = cv2.imencode(".png", img[:, :, ::-1])
    damaged = png_chunk(b"iCCP", b"icc\x00\x00" + b"not zlib data")
    data = png.tobytes()[:33] + damaged + png.tobytes()[33:]
    (tmp_path / "d.png").write_bytes(data)
    back, meta = images.read_image_and_metadata(tmp_path / "d.png")
    profile = meta.icc_profile
    assert profile is None
    np.testing.assert_array_equal(back, img)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("c", [2, 4])
def test_rgba_tiff_says_its_fourth_sample_is_straight_alpha(tmp_path: Path, c: int, dtype) -> None:
    # Without ExtraSamples, libtiff (GIMP), Photoshop and others take the fourth sample for an
    # unnamed extra channel, not transparency.
    img = photo_like(6, 7, c, dtype=np.uint8).astype(dtype)
    if dtype == np.float32:
        img /= 255
    write_image(tmp_path / "a.tiff", img)
    tags = images._tiff_short_tags((tmp_path / "a.tiff").read_bytes())
    assert tags[images._TIFF_EXTRA_SAMPLES][0] == 2 and tags[images._TIFF_SAMPLES_PER_PIXEL][0] == 4
    expected = img if c == 4 else np.concatenate([img[:, :, :1]] * 3 + [img[:, :, 1:]], axis=2)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tiff"), expected)  # not premultiplied on the way back
    if dtype != np.float32:  # Pillow reads no float RGBA TIFF at all
        pil = pytest.importorskip("PIL.Image")
        with pil.open(tmp_path / "a.tiff") as im:
            assert im.mode == "RGBA" and im.tag_v2.get(images._TIFF_EXTRA_SAMPLES) == (2,)


def camera_jpeg(path: Path, img: np.ndarray, orientation: int = 1) -> None:
    """A JPEG as a camera writes it: EXIF with make, date taken, pixel dimensions, orientation."""
    pil = pytest.importorskip("PIL.Image")
    exif = pil.Exif()
    exif[0x0112], exif[0x010F] = orientation, "esrcam"
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0xA002], sub[0xA003] = "2020:01:02 03:04:05", img.shape[1], img.shape[0]
    pil.fromarray(img).save(path, exif=exif, quality=95)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
def test_exif_is_carried_over_upright_with_the_new_size(tmp_path: Path, ext: str) -> None:
    pil = pytest.importorskip("PIL.Image")
    camera_jpeg(tmp_path / "in.jpg", photo_like(20, 30), orientation=6)  # stored sideways
    img, meta = images.read_image_and_metadata(tmp_path / "in.jpg")
    assert img.shape == (30, 20, 3)  # turned upright on reading
    big = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)
    write_image(tmp_path / f"out{ext}", big, metadata=meta)
    with pil.open(tmp_path / f"out{ext}") as im:
        exif = im.getexif()
        sub = exif.get_ifd(0x8769)
        assert im.size == (40, 60)
        assert exif[0x0112] == 1  # a viewer must not turn the upright pixels again
        assert exif[0x010F] == "esrcam" and sub[0x9003] == "2020:01:02 03:04:05"
        assert (sub[0xA002], sub[0xA003]) == (40, 60)
    np.testing.assert_array_equal(read_image(tmp_path / f"out{ext}").shape, big.shape)  # and esrforge does not either


def test_png_text_is_carried_to_png_outputs_only(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    png_plugin = pytest.importorskip("PIL.PngImagePlugin")
    info = png_plugin.PngInfo()
    info.add_text("parameters", "a lighthouse at dusk, Steps: 20, Sampler: Euler a")
    info.add_itxt("Comment", "ünïcode", zip=True)
    pil.fromarray(photo_like(20, 30)).save(tmp_path / "in.png", pnginfo=info)
    img, meta = images.read_image_and_metadata(tmp_path / "in.png")
    write_image(tmp_path / "out.png", img, metadata=meta)
    with pil.open(tmp_path / "out.png") as im:
        im.load()
        assert im.text == {"parameters": "a lighthouse at dusk, Steps: 20, Sampler: Euler a", "Comment": "ünïcode"}
    write_image(tmp_path / "out.jpg", img, metadata=meta)
    assert images.read_image_and_metadata(tmp_path / "out.jpg")[1] == ImageMetadata()


def test_an_exif_block_too_large_for_jpeg_is_left_out_with_a_warning(tmp_path: Path) -> None:
    exif = b"MM\x00*\x00\x00\x00\x08\x00\x00" + bytes(70_000)  # an empty IFD, then a large maker note, say
    with pytest.warns(UserWarning, match=r"big\.jpg: written without its EXIF block \(70010 bytes; a JPEG holds at most 65527\)"):
        write_image(tmp_path / "big.jpg", photo_like(8, 8), metadata=ImageMetadata(exif=exif))
    write_image(tmp_path / "big.png", photo_like(8, 8), metadata=ImageMetadata(exif=exif))  # PNG chunks can hold it
    assert images.read_image_and_metadata(tmp_path / "big.png")[1].exif == exif


def test_png_exif_after_the_image_data_is_honoured(tmp_path: Path) -> None:
    # libpng reads an eXIf chunk that follows IDAT; read_image, image_size and the carried-over
    # EXIF must agree with it, or the output would be written upright-marked but sideways.
    upright = photo_like(7, 9)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(STORED[6](upright))[:, :, ::-1])
    data = buf.tobytes()
    iend = data.rindex(b"IEND") - 4
    path = tmp_path / "late.png"
    path.write_bytes(data[:iend] + png_chunk(b"eXIf", tiff_orientation_ifd(6)) + data[iend:])
    img, meta = images.read_image_and_metadata(path)
    np.testing.assert_array_equal(img, upright)
    assert images.image_size(path) == (7, 9)
    write_image(tmp_path / "out.png", img, metadata=meta)
    assert exif_orientation((tmp_path / "out.png").read_bytes()) == 1
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), upright)


def test_a_tiff_opencv_cannot_decode_says_why_where_the_tags_tell(tmp_path: Path) -> None:
    h, w = 4, 5
    body = np.linspace(0, 1, h * w, dtype=np.float16).tobytes()
    n, data_at = 10, 8 + 2 + 12 * 10 + 4
    tags = [(256, 3, w), (257, 3, h), (258, 3, 16), (259, 3, 1), (262, 3, 1), (273, 4, data_at),
            (277, 3, 1), (278, 3, h), (279, 4, len(body)), (339, 3, 3)]  # SampleFormat 3: IEEE float
    ifd = b"".join(struct.pack("<HHI", t, k, 1) + (struct.pack("<HH", v, 0) if k == 3 else struct.pack("<I", v)) for t, k, v in tags)
    (tmp_path / "half.tif").write_bytes(b"II" + struct.pack("<HIH", 42, 8, n) + ifd + struct.pack("<I", 0) + body)
    with pytest.raises(ImageError, match=r"half\.tif: not a readable image \(16-bit float samples, which OpenCV does not read"):
        read_image(tmp_path / "half.tif")
    # RGB: BitsPerSample and SampleFormat hold three values each, stored past the entries
    body = np.zeros(h * w * 3, np.float16).tobytes()
    extra_at = data_at
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, extra_at), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, extra_at + 12),
            (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(body)), (339, 3, 3, extra_at + 6)]
    ifd = b"".join(struct.pack("<HHI", t, k, c) + (struct.pack("<HH", v, 0) if k == 3 and c == 1 else struct.pack("<I", v))
                   for t, k, c, v in tags)
    extra = struct.pack("<6H", 16, 16, 16, 3, 3, 3)
    (tmp_path / "half_rgb.tif").write_bytes(b"II" + struct.pack("<HIH", 42, 8, n) + ifd + struct.pack("<I", 0) + extra + body)
    with pytest.raises(ImageError, match=r"half_rgb\.tif: not a readable image \(16-bit float samples"):
        read_image(tmp_path / "half_rgb.tif")
    (tmp_path / "tiles16.tif").write_bytes(tiled_tiff(photo_like(36, 40), 16, 1))  # OpenCV 5 fails 16 x 16 tiles
    try:
        read_image(tmp_path / "tiles16.tif")
    except ImageError as e:
        assert "OpenCV could not decode this tiled TIFF" in str(e)
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + bytes(20))
    with pytest.raises(ImageError, match=r"bad\.tif: not a readable image \(corrupt, or a TIFF layout OpenCV does not read\)"):
        read_image(tmp_path / "bad.tif")


def test_an_animated_webp_is_lossless_when_its_first_frame_is(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    frames = [pil.fromarray(photo_like(16, 16, seed=i)) for i in range(2)]
    for lossless in (True, False):
        path = tmp_path / f"anim_{lossless}.webp"
        frames[0].save(path, save_all=True, append_images=frames[1:], lossless=lossless, quality=80)
        assert images.webp_is_lossless(path) == lossless


def test_image_size_of_a_large_png_reads_its_ends_only(tmp_path: Path, monkeypatch) -> None:
    # Datasets check every image's size at startup: walking a 2K PNG's hundreds of IDAT chunks for
    # a late eXIf read the whole dataset from disk.
    img = (np.random.default_rng(0).random((600, 800, 3)) * 255).astype(np.uint8)  # ~1.4 MB of IDAT
    ok, buf = cv2.imencode(".png", img)
    data = buf.tobytes()
    iend = data.rindex(b"IEND") - 4
    path = tmp_path / "big.png"
    path.write_bytes(data[:iend] + png_chunk(b"eXIf", tiff_orientation_ifd(6)) + data[iend:])
    read = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            chunk = self.f.read(n)
            read.append(len(chunk))
            return chunk

        def seek(self, *args):
            return self.f.seek(*args)

    monkeypatch.setattr(images, "open", lambda p, mode="r": Counting(real_open(p, mode)), raising=False)
    assert images.image_size(path) == (800, 600)  # the late eXIf's orientation 6 is still seen
    # the head and the tail: not one small read per chunk, each of which makes the OS fetch a page
    assert len(read) <= 3 and sum(read) <= 2 * 65536 < len(data) // 10


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("short.tif", b"II*\x00"),  # a TIFF header cut after its magic
        ("ifd.tif", b"II*\x00\xff\xff\x00\x00"),  # first IFD past the end
        ("ihdr.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),  # IHDR cut before the size
        ("sof.jpg", b"\xff\xd8\xff\xc0\x00\x02"),  # a frame header with no size in it
    ],
)
def test_damaged_headers_are_image_errors_for_read_and_size(tmp_path: Path, name: str, data: bytes) -> None:
    """esrforge's own header parsing (TIFF tags, PNG/JPEG sizes) raised struct.error, which
    stopped folder runs and training with a traceback."""
    path = tmp_path / name
    path.write_bytes(data)
    for fn in (read_image, images.image_size, images.read_image_and_metadata):
        with pytest.raises(ImageError, match=f"^{path}: "):
            fn(path)


def test_a_png_chunk_longer_than_the_file_is_refused_before_decoding(tmp_path: Path) -> None:
    """libpng allocates what a chunk declares before it finds the bytes missing: 2 GB for 83 bytes."""
    ok, buf = cv2.imencode(".png", photo_like(1, 1))
    data = buf.tobytes()
    path = tmp_path / "long.png"
    path.write_bytes(data[:33] + struct.pack(">I", 0x7FFFFFFF) + b"tEXt" + b"k\x00v" * 10 + data[33:])
    with pytest.raises(ImageError, match=r"its 'tEXt' chunk declares 2147483647 bytes, the file has \d+ left"):
        read_image(path)


def test_a_colour_profile_that_inflates_past_what_any_file_holds_is_no_profile(tmp_path: Path) -> None:
    """A zlib bomb in iCCP (1000:1) read as far as a JPEG could hold, then dropped; pixels read."""
    bomb = zlib.compress(b"\x00" * (images._ICC_MAX + 1), 9)
    ok, buf = cv2.imencode(".png", photo_like(4, 4))
    data = buf.tobytes()
    path = tmp_path / "bomb.png"
    path.write_bytes(data[:33] + png_chunk(b"iCCP", b"icc\x00\x00" + bomb) + data[33:])
    img, meta = images.read_image_and_metadata(path)
    assert img.shape == (4, 4, 3) and meta.icc_profile is None


def test_a_profile_larger_than_a_jpeg_holds_is_left_out_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    """A JPEG holds 255 APP2 segments (16.7 MB); a larger profile failed the write with
    'bytes must be in range(0, 256)'. (The limit is lowered here so the test stays small.)"""
    monkeypatch.setattr(images, "_ICC_MAX", 300)
    out = tmp_path / "o.jpg"
    with pytest.warns(UserWarning, match=r"o.jpg: written without its colour profile \(388 bytes; a JPEG holds at most 300\)"):
        write_image(out, photo_like(8, 8), metadata=ImageMetadata(icc(extra=256), None, ()))
    assert read_image(out).shape == (8, 8, 3) and images.read_image_and_metadata(out)[1].icc_profile is None
