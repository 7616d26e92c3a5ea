"""Image files in and out: 8/16-bit, gray, RGB, RGBA, EXIF orientation, atomic writes.

Arrays are H x W x C in RGB(A) order, dtype uint8 or uint16 (float32 in [0, 1] is accepted on
write). Files are read and written through bytes so that non-ASCII paths work everywhere.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from esrforge.modelio.files import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tiff"}


class ImageError(ValueError):
    """An image that cannot be read or written; the message names the file."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as H x W x C (C = 1, 3 or 4), RGB order, its own bit depth, upright."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype not in (np.uint8, np.uint16):
        if img.dtype in (np.float32, np.float64):
            img = np.clip(img, 0, 1).astype(np.float32)
        else:
            raise ImageError(f"{path}: unsupported sample type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    elif img.shape[2] == 2:  # gray + alpha: expand so alpha handling is uniform
        img = np.concatenate([np.repeat(img[:, :, :1], 3, axis=2), img[:, :, 1:]], axis=2)
    img = apply_orientation(img, exif_orientation(data.tobytes()))
    return np.ascontiguousarray(img)


def write_image(path: str | os.PathLike[str], img: np.ndarray, *, quality: int = 95) -> None:
    """Encode by the file's extension and write atomically (temporary name, then rename)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_SUFFIXES:
        raise ImageError(f"{path}: unknown image format {ext or '(no extension)'}")
    if img.dtype == np.float32:
        img = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    channels = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype == np.uint16 and ext in (".jpg", ".jpeg", ".webp", ".bmp"):
        raise ImageError(f"{path}: {ext} cannot store 16-bit samples; use png or tiff")
    if channels == 4 and ext in (".jpg", ".jpeg", ".bmp"):
        raise ImageError(f"{path}: {ext} cannot store an alpha channel; use png, webp or tiff")
    if channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif channels == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ImageError(f"{path}: encoding as {ext} failed")
    atomic_write_bytes(path, buf.tobytes())


# --- EXIF orientation -------------------------------------------------------------------------
# OpenCV only applies EXIF orientation when it also converts depth/channels, so alpha and 16-bit
# reads (IMREAD_UNCHANGED) come back unrotated. We read the tag ourselves.


def _tiff_orientation(tiff: bytes) -> int:
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    e = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (n,) = struct.unpack(e + "H", tiff[ifd : ifd + 2])
    for i in range(n):
        off = ifd + 2 + 12 * i
        if off + 12 > len(tiff):
            break
        tag, typ = struct.unpack(e + "HH", tiff[off : off + 4])
        if tag == 0x0112 and typ == 3:
            (value,) = struct.unpack(e + "H", tiff[off + 8 : off + 10])
            return value if 1 <= value <= 8 else 1
    return 1


def _strip_exif_header(b: bytes) -> bytes:
    return b[6:] if b.startswith(b"Exif\x00\x00") else b


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) of an encoded JPEG, PNG, WebP or TIFF file; 1 if none."""
    try:
        if data[:2] == b"\xff\xd8":  # JPEG: walk the marker segments up to the scan
            pos = 2
            while pos + 4 <= len(data) and data[pos] == 0xFF:
                marker = data[pos + 1]
                if marker in (0xDA, 0xD9):
                    break
                (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
                seg = data[pos + 4 : pos + 2 + length]
                if marker == 0xE1 and seg.startswith(b"Exif\x00\x00"):
                    return _tiff_orientation(seg[6:])
                pos += 2 + length
        elif data[:8] == b"\x89PNG\r\n\x1a\n":
            pos = 8
            while pos + 8 <= len(data):
                length, kind = struct.unpack(">I4s", data[pos : pos + 8])
                if kind == b"eXIf":
                    return _tiff_orientation(_strip_exif_header(data[pos + 8 : pos + 8 + length]))
                if kind in (b"IDAT", b"IEND"):
                    break
                pos += 12 + length
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            pos = 12
            while pos + 8 <= len(data):
                kind, length = struct.unpack("<4sI", data[pos : pos + 8])
                if kind == b"EXIF":
                    return _tiff_orientation(_strip_exif_header(data[pos + 8 : pos + 8 + length]))
                pos += 8 + length + (length & 1)
        elif data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_orientation(data)
    except struct.error:
        return 1
    return 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF `orientation` upright."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return ops[orientation](img) if orientation in ops else img


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image file, upright, from its header where that is cheap.

    Datasets check every pair's sizes up front; decoding thousands of full images for that
    would take minutes, reading PNG/JPEG headers takes milliseconds.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    size = None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        size = (h, w)
    elif head[:2] == b"\xff\xd8":
        pos = 2
        while pos + 9 <= len(head) and head[pos] == 0xFF:
            marker = head[pos + 1]
            (length,) = struct.unpack(">H", head[pos + 2 : pos + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", head[pos + 5 : pos + 9])
                size = (h, w)
                break
            pos += 2 + length
    if size is None or min(size) == 0:
        return read_image(path).shape[:2]  # other formats, or a header we could not follow
    if exif_orientation(head) in (5, 6, 7, 8):
        size = (size[1], size[0])
    return size
