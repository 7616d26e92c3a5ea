"""Image files in and out: 8/16-bit, gray, gray + alpha, RGB, RGBA, EXIF orientation, atomic writes.

Arrays are H x W x C in RGB(A) order (C = 2 is gray + alpha), dtype uint8 or uint16; float32
in [0, 1] is accepted on write and read back from float TIFFs. Files are read through bytes so
that non-ASCII paths work everywhere; writes fall back to bytes where OpenCV cannot open the path
itself.
"""

from __future__ import annotations

import os
import shutil
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from esrforge.fileio import atomic_save

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tiff"}
NO_ALPHA_SUFFIXES = (".jpg", ".jpeg", ".bmp")  # formats that cannot store an alpha channel


def visible_files(folder: Path) -> list[Path]:
    """Files under `folder`, leaving out hidden ones (a name starting with '.' anywhere below it):
    macOS's `._x.png` resource forks, and the temporary files of a write that a killed run left.

    Symlinked folders are followed (datasets are often assembled from links), each real folder
    once and under its own name when it lies in the tree itself, so a link back up the tree
    cannot loop and the listing does not depend on the order the file system lists folders in."""
    folder = Path(folder)
    base = os.path.realpath(folder)
    inside = {os.path.realpath(root) for root, _, _ in os.walk(folder)}  # folders really in the tree
    own: list[tuple[str, list[str]]] = []
    linked: list[tuple[str, list[str]]] = []
    visited: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        under_own_name = real == os.path.normpath(os.path.join(base, os.path.relpath(root, folder)))
        if (real in inside and not under_own_name) or real in visited:
            dirs.clear()  # a link into the tree (walked under its own name), a loop, a second link
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        (own if under_own_name else linked).append((root, sorted(f for f in files if not f.startswith("."))))
    return [Path(root, f) for root, names in own + linked for f in names if os.path.isfile(os.path.join(root, f))]


def clip_to_unit(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A float image as models take it, [0, 1] without NaN (infinities clipped, NaN set to 0),
    and what was wrong with it (None, and the image itself, when nothing was)."""
    note = float_range_note(img)
    return (img, None) if note is None else (np.nan_to_num(np.clip(img, 0, 1), nan=0.0), note)


def float_range_note(img: np.ndarray) -> str | None:
    """What is wrong with a float image's samples for a model that takes [0, 1], or None.
    (HDR or 0..255 float TIFFs exist; they are clipped, and the user should hear of it.)"""
    if img.dtype.kind != "f":
        return None
    finite = np.isfinite(img)
    nans, infs = int(np.isnan(img).sum()), int(np.isinf(img).sum())
    lo, hi = (float(img[finite].min()), float(img[finite].max())) if nans + infs < img.size else (0.0, 0.0)
    notes = []
    if lo < 0 or hi > 1:
        notes.append(f"float samples range from {lo:g} to {hi:g}; esrforge works in 0..1, so the rest is clipped")
    if infs:
        notes.append(f"{infs} infinite sample(s) clipped to 0 or 1")
    if nans:
        notes.append(f"{nans} NaN sample(s) set to 0")
    return "; ".join(notes) or None


class ImageError(ValueError):
    """An image that cannot be read or written; the message names the file."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as H x W x C (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA), its own bit depth, upright."""
    return _read(Path(path))[0]


def read_image_and_metadata(path: str | os.PathLike[str]) -> tuple[np.ndarray, ImageMetadata]:
    """`read_image`, and the file's colour profile, EXIF and PNG text (see ImageMetadata).

    Hand the metadata to `write_image` so that the output's colours mean what the input's did
    and it keeps the date taken, the camera, and the like."""
    img, raw = _read(Path(path))
    return img, image_metadata(raw)


def _read(path: Path) -> tuple[np.ndarray, bytes]:
    """The image and the file's bytes."""
    try:
        return _read_unchecked(path)
    except ImageError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError, zlib.error) as e:
        # esrforge's own header parsing (TIFF tags, EXIF, PNG chunks) on a damaged file
        raise ImageError(f"{path}: not a readable image (damaged header: {e})") from None


def _read_unchecked(path: Path) -> tuple[np.ndarray, bytes]:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    raw = data.tobytes()  # the header parsing below works on bytes
    is_png, is_tiff = raw[:8] == _PNG_SIGNATURE, raw[:4] in _TIFF_MAGIC
    if is_png:
        _check_png_chunks(path, raw)
    if (is_png and any(kind == b"acTL" for kind, _ in _png_header_chunks(raw))) or any(
        kind == b"ANIM" for kind, _, _ in _webp_chunks(raw)
    ):
        warnings.warn(f"{path}: an animated image; only its first frame is read", stacklevel=3)
    tiff_tags = _tiff_short_tags(raw) if is_tiff else {}
    tiff = {tag: (v, at) for tag, (v, at, n) in tiff_tags.items() if n == 1}
    if tiff.get(_TIFF_EXTRA_SAMPLES, (0, 0))[0] == 2:
        # For 8-bit RGBA TIFFs with "unassociated alpha" (GIMP's and Photoshop's) OpenCV goes
        # through libtiff's RGBA reader, which premultiplies: colour 162 under alpha 4 came back
        # as 3. Marked "unspecified" (in our copy of the bytes), the samples come as stored.
        at = tiff[_TIFF_EXTRA_SAMPLES][1]
        data[at : at + 2] = 0  # a SHORT 0 in either byte order
    if tiff.get(_ORIENTATION_TAG, (1, 0))[0] != 1:
        # Turned upright below, not by OpenCV: OpenCV 4 ignores the tag, OpenCV 5 applies it to
        # most TIFFs but mirrors tiled 8-bit ones tile by tile. Marked 1 in our copy of the
        # bytes, every TIFF decodes as stored.
        at = tiff[_ORIENTATION_TAG][1]
        data[at : at + 2] = np.frombuffer(struct.pack("<H" if raw[:2] == b"II" else ">H", 1), np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. a header declaring more pixels than OpenCV allows
        raise ImageError(f"{path}: not a readable image ({_cv2_reason(e)})") from None
    if img is None:
        raise ImageError(f"{path}: not a readable image ({_tiff_hint(raw, tiff_tags) if is_tiff else 'corrupt or unsupported format'})")
    if img.dtype not in (np.uint8, np.uint16):
        if img.dtype in (np.float32, np.float64):
            img, note = clip_to_unit(img.astype(np.float32))
            if note:  # an HDR or 0..255 float TIFF: say so, rather than clip it unseen
                warnings.warn(f"{path}: {note}", stacklevel=3)
        else:
            raise ImageError(f"{path}: unsupported sample type {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
        if tiff.get(_TIFF_SAMPLES_PER_PIXEL, (1, 0))[0] == 2:
            bits = tiff_tags.get(_TIFF_BITS_PER_SAMPLE, (8, 0, 0))[0]
            also = f", and its {bits}-bit samples as 8-bit" if bits > 8 else ""
            warnings.warn(f"{path}: OpenCV reads gray + alpha TIFFs without their alpha{also}; save as PNG to keep it", stacklevel=3)
        key = _png_gray_transparent_value(raw) if is_png else None
        if key is not None:  # OpenCV drops a gray PNG's tRNS: that one gray level is transparent
            img = np.dstack([img, np.where(img == key, 0, np.iinfo(img.dtype).max).astype(img.dtype)])
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 4 and is_png and raw[25] == _PNG_GRAY_ALPHA:
        img = img[:, :, [0, 3]]  # OpenCV expands gray + alpha PNGs to BGRA (B = G = R, exactly)
    elif img.shape[2] == 4 and tiff.get(_TIFF_PHOTOMETRIC, (0, 0))[0] == _TIFF_CMYK and _TIFF_EXTRA_SAMPLES not in tiff:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)  # CMYK comes as BGRA with an opaque alpha it never had
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        if tiff.get(_TIFF_EXTRA_SAMPLES, (0, 0))[0] == 1:  # associated alpha: colour stored premultiplied
            img = _unpremultiply(img)
    orientation = exif_orientation(raw)
    return np.ascontiguousarray(apply_orientation(img, orientation)), raw


def _unpremultiply(img: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA from premultiplied (colour / alpha, on the samples' scale); colour
    under alpha 0 is 0. The rest of esrforge, and the files it writes, take alpha as straight."""
    top = float(np.iinfo(img.dtype).max) if img.dtype.kind == "u" else 1.0
    alpha = img[:, :, 3:].astype(np.float32)
    colour = img[:, :, :3].astype(np.float32) * np.float32(top) / np.maximum(alpha, np.float32(1e-12))
    colour[np.broadcast_to(alpha == 0, colour.shape)] = 0
    np.clip(colour, 0, top, out=colour)
    if img.dtype.kind == "u":
        colour = np.rint(colour)
    out = img.copy()
    out[:, :, :3] = colour.astype(img.dtype)
    return out


def _tiff_hint(raw: bytes, tags: dict[int, tuple[int, int, int]]) -> str:
    """Why OpenCV may have refused a TIFF, where its tags (`_tiff_short_tags`) tell."""
    if tags.get(_TIFF_SAMPLE_FORMAT, (1, 0, 0))[0] == 3 and tags.get(_TIFF_BITS_PER_SAMPLE, (0, 0, 0))[0] == 16:
        return "16-bit float samples, which OpenCV does not read; save with 32-bit float or 16-bit integer samples"
    if any(tag == _TIFF_TILE_WIDTH for tag, _, _, _ in _tiff_entries(raw)):
        return "OpenCV could not decode this tiled TIFF; saved in strips (the usual layout) it reads"
    return "corrupt, or a TIFF layout OpenCV does not read"


def _cv2_reason(e: cv2.error) -> str:
    why = str(getattr(e, "err", "") or str(e).strip().splitlines()[0])
    if "CV_IO_MAX_IMAGE" in why:  # the failed check reads like "pixels <= CV_IO_MAX_IMAGE_PIXELS"
        return f"size over OpenCV's limit: {why}; see OPENCV_IO_MAX_IMAGE_PIXELS"
    return f"OpenCV: {why}"


def write_image(
    path: str | os.PathLike[str],
    img: np.ndarray,
    *,
    quality: int = 95,
    lossless: bool = False,
    metadata: ImageMetadata | None = None,
) -> None:
    """Encode by the file's extension and write atomically (temporary name, then rename).

    float32 stays float in TIFF and becomes 8-bit elsewhere; 16-bit becomes 8-bit in formats
    without 16-bit samples (JPEG, WebP, BMP). Alpha into JPEG or BMP is an ImageError. Gray +
    alpha is a gray + alpha PNG (OpenCV's encoder has no such mode; ours does) and RGBA in TIFF
    and WebP. `quality` (1-100) applies to JPEG and lossy WebP; `lossless` makes WebP lossless
    (PNG and TIFF always are; JPEG has no such mode and ignores it).

    `metadata` (as `read_image_and_metadata` gives it): the colour profile goes into PNG, JPEG,
    WebP and TIFF (one that cannot describe the image, a CMYK profile on RGB, is left out with a
    warning), EXIF into PNG, JPEG and WebP with its pixel dimensions set to the image's, PNG text
    into PNG.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_SUFFIXES:
        raise ImageError(f"{path}: unknown image format {ext or '(no extension)'}")
    if not isinstance(img, np.ndarray) or img.dtype not in (np.uint8, np.uint16, np.float32) or img.ndim not in (2, 3):
        what = f"{img.dtype} samples of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ImageError(f"{path}: cannot write {what}; give H x W (x C) uint8, uint16, or float32 in [0, 1]")
    note = float_range_note(img)
    if note:  # a float image in 0..255 would come out nearly white
        warnings.warn(f"{path}: {note}", stacklevel=2)
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels in (2, 4) and ext in NO_ALPHA_SUFFIXES:
        raise ImageError(f"{path}: {ext} cannot store an alpha channel; use png, webp or tiff")
    # as stored: OpenCV writes gray WebP as RGB, and gray + alpha goes into RGBA outside PNG
    stored = channels + 2 if channels in (1, 2) and ext == ".webp" else 4 if channels == 2 and ext != ".png" else channels
    shape = img.shape
    meta = _metadata_to_write(path, metadata, stored, shape)
    profile = meta.icc_profile if meta else None

    def finish(tmp: str) -> None:
        """What OpenCV's encoders leave out: the metadata, and the TIFF tag saying that a fourth
        sample is alpha (straight, not premultiplied); without it other programs take it
        for an unnamed extra channel."""
        if ext in (".tif", ".tiff"):
            tags: list[tuple[int, int, bytes | tuple[int, ...]]] = [(_ICC_TIFF_TAG, 7, profile)] if profile else []
            if stored == 4:
                tags.append((_TIFF_EXTRA_SAMPLES, 3, (2,)))  # 2: unassociated alpha
            if tags:
                _tiff_set_tags(tmp, tags)
        elif meta:
            _embed_metadata(tmp, ext, meta, shape)
    own = False  # whether `img` is our own copy, which may then be converted in place
    if img.dtype == np.float32 and ext not in (".tif", ".tiff"):  # TIFF stores 32-bit float as is
        f = np.clip(img, 0, 1)
        f *= 255.0
        f += 0.5
        img, own = f.astype(np.uint8), True
    elif img.dtype == np.uint16 and ext in (".jpg", ".jpeg", ".webp", ".bmp"):
        # As an editor's "save as JPEG" does: round(x / 257). OpenCV converts without a float
        # copy of the whole image (x / 257 is never a tie, so its rounding is exact).
        img, own = cv2.convertScaleAbs(img, alpha=1 / 257).reshape(img.shape), True
    if channels == 2:
        if ext == ".png":
            if img.dtype not in (np.uint8, np.uint16) or img.size == 0:
                raise ImageError(f"{path}: cannot write a {img.dtype} image of shape {img.shape} as PNG")
            def write_png(tmp: str) -> None:
                _write_gray_alpha_png(tmp, img)
                finish(tmp)

            atomic_save(path, write_png)
            return
        img, own, channels = np.concatenate([np.repeat(img[:, :, :1], 3, axis=2), img[:, :, 1:]], axis=2), True, 4
    # OpenCV encodes BGR(A). The caller's array must not change, so this is a copy unless the
    # depth conversion above already made one.
    if channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR, dst=img if own else None)
    elif channels == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA, dst=img if own else None)
    params: list[int] = []
    if ext in (".tif", ".tiff") and img.dtype == np.float32:
        # Deflate, asked for by number: OpenCV before 5 wrote float RGB TIFFs with lossy SGILOG
        # compression by default (samples off by up to 0.02) and takes this request as "none".
        params = [cv2.IMWRITE_TIFF_COMPRESSION, 8]
    elif ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 101 if lossless else quality]  # OpenCV: above 100 = lossless
    elif ext == ".png" and hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV 4.11+ lets the filter be chosen
        # OpenCV's fast default (zlib level 1, RLE) with the Paeth filter instead of Sub: upscaled
        # photos come out about a quarter smaller for a few percent more time (docs/benchmarks.md).
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                  cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]

    def encode_into(tmp: str) -> None:
        # cv2.imwrite encodes straight into the file: imencode would hold the encoded image in
        # memory twice (OpenCV's buffer, then its numpy copy). OpenCV picks the encoder by the
        # extension, so it writes to the temporary name plus `ext`, renamed once complete.
        named = tmp + ext
        try:
            try:
                ok = cv2.imwrite(named, img, params) and _ends_whole(named, ext)
            except cv2.error:
                ok = False
            if ok:
                os.replace(named, tmp)
                finish(tmp)
                return
        finally:
            Path(named).unlink(missing_ok=True)
        # OpenCV could not open the name (non-ASCII paths on Windows), could not encode, or left
        # the file short: encode in memory, which raises the real error if there is one.
        try:
            ok, buf = cv2.imencode(ext, img, params)
        except cv2.error as e:  # e.g. larger than the format allows (older OpenCV raises)
            raise ImageError(f"{path}: encoding as {ext} failed ({_cv2_reason(e)})") from None
        if not ok:
            raise ImageError(f"{path}: encoding as {ext} failed")
        buf.tofile(tmp)  # the array itself: buf.tobytes() would be another copy of the file
        finish(tmp)

    atomic_save(path, encode_into)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_ALPHA = 4  # IHDR colour type; IHDR is always the first chunk, its colour type at byte 25


def _png_chunks(png: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, size) of a PNG's chunks, up to IEND."""
    at = 8
    while at + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        yield kind, at + 8, length
        if kind == b"IEND":
            return
        at += 12 + length


def _check_png_chunks(path: Path, png: bytes) -> None:
    """Refuse a PNG chunk that declares more bytes than the file has: libpng would allocate what
    it declares first (2 GB for an 83-byte file) and fail after."""
    for kind, at, length in _png_chunks(png):
        if at + length + 4 > len(png):
            name = kind.decode("latin-1")
            raise ImageError(f"{path}: not a readable image (its {name!r} chunk declares {length} bytes, the file has {len(png) - at} left: truncated or damaged)")


def _png_header_chunks(png: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, data) of a PNG's chunks before the image data, where tRNS and eXIf live."""
    for kind, at, length in _png_chunks(png):
        if kind in (b"IDAT", b"IEND"):
            return
        yield kind, png[at : at + length]


def _webp_chunks(riff: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(fourcc, offset, size) of a WebP file's top-level chunks; nothing for other files."""
    if riff[:4] != b"RIFF" or riff[8:12] != b"WEBP":
        return
    at = 12
    while at + 8 <= len(riff):
        kind, size = riff[at : at + 4], struct.unpack("<I", riff[at + 4 : at + 8])[0]
        yield kind, at + 8, size
        at += 8 + size + (size & 1)


def webp_is_lossless(path: str | os.PathLike[str]) -> bool:
    """Whether a file is a lossless (VP8L) WebP; for an animation, whether its first frame is."""
    try:
        return _webp_lossless(Path(path).read_bytes())
    except OSError:
        return False


def _webp_lossless(data: bytes) -> bool:
    for kind, at, size in _webp_chunks(data):
        if kind == b"ANMF":  # an animation frame: 16 bytes of position and timing, then its own chunks
            return _webp_lossless(b"RIFF" + bytes(4) + b"WEBP" + data[at + 16 : at + size])
        if kind in (b"VP8L", b"VP8 "):
            return kind == b"VP8L"
    return False


def _png_gray_transparent_value(png: bytes) -> int | None:
    """The transparent gray level of a gray PNG's tRNS chunk, on OpenCV's decoded scale, or None."""
    if len(png) < 33 or png[25] != 0:  # IHDR colour type 0: gray without alpha
        return None
    depth = png[24]
    for kind, chunk in _png_header_chunks(png):
        if kind == b"tRNS" and len(chunk) >= 2:
            (value,) = struct.unpack(">H", chunk[:2])
            return value * 255 // ((1 << depth) - 1) if depth < 8 else value  # 1/2/4-bit are expanded to 8
    return None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_gray_alpha_png(name: str, img: np.ndarray, rows_per_block: int = 256) -> None:
    """A gray + alpha PNG (colour type 4, 8 or 16 bits), compressed a block of rows at a time.

    Rows use PNG's Sub filter (each byte minus the byte one pixel to its left), one vectorised
    subtraction: scikit-image's camera photo with an opaque alpha takes 190 KB, against 486 KB
    as the RGBA PNG that OpenCV would write instead."""
    h, w = img.shape[:2]
    depth = 16 if img.dtype == np.uint16 else 8
    bpp = 2 * depth // 8  # bytes per pixel
    comp = zlib.compressobj(6)
    with open(name, "wb") as f:
        f.write(_PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, _PNG_GRAY_ALPHA, 0, 0, 0)))
        for y in range(0, h, rows_per_block):
            block = np.ascontiguousarray(img[y : y + rows_per_block], dtype=">u2" if depth == 16 else np.uint8)
            raw = block.view(np.uint8).reshape(block.shape[0], w * bpp)
            rows = np.empty((raw.shape[0], 1 + w * bpp), np.uint8)
            rows[:, 0] = 1  # filter type Sub
            rows[:, 1 : 1 + bpp] = raw[:, :bpp]
            np.subtract(raw[:, bpp:], raw[:, :-bpp], out=rows[:, 1 + bpp :])  # wraps mod 256, as PNG wants
            data = comp.compress(rows.tobytes())
            if data:
                f.write(_png_chunk(b"IDAT", data))
        f.write(_png_chunk(b"IDAT", comp.flush()) + _png_chunk(b"IEND", b""))


def _ends_whole(name: str, ext: str) -> bool:
    """Whether a file cv2.imwrite wrote ends as its format requires.

    OpenCV ignores fclose()'s result, so a failed final flush (disk full) would pass for success.
    libtiff writes unbuffered and checks each write, so TIFF needs no check here.
    """
    size = os.path.getsize(name)
    with open(name, "rb") as f:
        head = f.read(8)
        f.seek(max(0, size - 12))
        tail = f.read()
    if ext == ".png":
        return tail == b"\0\0\0\0IEND\xaeB`\x82"
    if ext in (".jpg", ".jpeg"):
        return tail[-2:] == b"\xff\xd9"
    if ext == ".webp":  # RIFF header: the size of what follows it
        return len(head) == 8 and struct.unpack("<I", head[4:])[0] + 8 == size
    if ext == ".bmp":  # BITMAPFILEHEADER: the file's size
        return len(head) == 8 and struct.unpack("<I", head[2:6])[0] == size
    return size > 0


# --- EXIF orientation -------------------------------------------------------------------------
# OpenCV applies EXIF orientation to JPEG, PNG and WebP only when it also converts depth/channels,
# so IMREAD_UNCHANGED reads (alpha, 16-bit) come back unrotated: we read the tag ourselves, and
# have OpenCV decode TIFFs as stored (see _read).


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def _tiff_short_tags(tiff: bytes) -> dict[int, tuple[int, int, int]]:
    """{tag: (first value, offset of the value, count)} of the SHORT entries of a TIFF's first IFD
    (the page OpenCV reads), as far as the bytes go; {} without a TIFF header."""
    out: dict[int, tuple[int, int, int]] = {}
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return out
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        for tag, kind, n, at in _tiff_entries(tiff):
            if kind == 3:
                at = _tiff_values_at(tiff, at, 2 * n)
                out.setdefault(tag, (struct.unpack(order + "H", tiff[at : at + 2])[0], at, n))
    except struct.error:
        pass  # truncated: the entries read so far
    return out


_TIFF_SAMPLES_PER_PIXEL, _TIFF_EXTRA_SAMPLES = 277, 338
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT, _TIFF_TILE_WIDTH = 258, 339, 322
_TIFF_PHOTOMETRIC, _TIFF_CMYK = 262, 5


def _tiff_orientation(tiff: bytes) -> int:
    value = _tiff_short_tags(tiff).get(_ORIENTATION_TAG, (1, 0, 0))[0]
    return value if 1 <= value <= 8 else 1


def _strip_exif_header(b: bytes) -> bytes:
    return b[len(_EXIF_HEADER) :] if b.startswith(_EXIF_HEADER) else b


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) of an encoded JPEG, PNG, WebP or TIFF file; 1 if none."""
    try:
        block = data if data[:4] in _TIFF_MAGIC else _exif_block(data)
        return _tiff_orientation(block) if block else 1
    except struct.error:
        return 1


def _exif_block(data: bytes) -> bytes | None:
    """The EXIF block (TIFF-structured, 'Exif\\0\\0' header removed) of an encoded JPEG, PNG or
    WebP file, or None."""
    if data[:2] == b"\xff\xd8":
        for marker, at, end in _jpeg_segments(data):
            if marker == 0xE1 and data[at : at + 6] == _EXIF_HEADER:
                return data[at + 6 : end]
    elif data[:8] == _PNG_SIGNATURE:
        for kind, at, size in _png_chunks(data):  # libpng takes eXIf after the image data too
            if kind == b"eXIf":
                return _strip_exif_header(data[at : at + size])
    else:
        for kind, at, size in _webp_chunks(data):
            if kind == b"EXIF":
                return _strip_exif_header(data[at : at + size])
    return None


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
            png_exif = _png_file_exif(f, head) if head[:8] == _PNG_SIGNATURE else None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    except (struct.error, ValueError):
        head, png_exif = b"", None  # a damaged header: read_image below says what is wrong
    size = None
    try:
        if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            size = (h, w)
        elif head[:2] == b"\xff\xd8":
            for marker, at, end in _jpeg_segments(head):
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and end <= len(head):
                    size = struct.unpack(">HH", head[at + 1 : at + 5])  # frame header: precision, height, width
                    break
        orientation = exif_orientation(head) if png_exif is None else _tiff_orientation(_strip_exif_header(png_exif))
    except (struct.error, IndexError, ValueError):
        size = None
    if size is None or min(size) == 0:
        return read_image(path).shape[:2]  # other formats, or a header we could not follow
    if orientation in (5, 6, 7, 8):
        size = (size[1], size[0])
    return size


def _png_file_exif(f: BinaryIO, head: bytes) -> bytes:
    """The eXIf chunk's data of an open PNG: before the image data (in `head`), or after it near
    the end of the file, where writers put a late one. The chunks between are not read: a 2K PNG
    has hundreds of IDAT chunks, and walking them read the whole dataset at startup."""
    for kind, chunk in _png_header_chunks(head):
        if kind == b"eXIf":
            return chunk
    end = f.seek(0, os.SEEK_END)
    f.seek(max(0, end - 65536))
    tail = f.read()
    at = tail.rfind(b"eXIf")
    while at >= 4:  # a chunk whose CRC checks out, not four bytes that happen to spell it
        (length,) = struct.unpack(">I", tail[at - 4 : at])
        data, crc = tail[at + 4 : at + 4 + length], tail[at + 4 + length : at + 8 + length]
        if len(data) == length and len(crc) == 4 and zlib.crc32(b"eXIf" + data) == struct.unpack(">I", crc)[0]:
            return data
        at = tail.rfind(b"eXIf", 0, at)
    return b""


# --- Metadata: colour profile, EXIF, PNG text ---------------------------------------------------
# OpenCV decodes pixels only and its encoders write none of this, so it is read from the input's
# bytes and spliced into the output file after encoding. The colour profile matters most: phone
# and camera photos are often Display P3 or Adobe RGB, the model works on the numbers as stored,
# and without the profile a viewer takes the output's numbers for sRGB, so colours come out muted.


@dataclass(frozen=True)
class ImageMetadata:
    """What an image file holds besides its pixels that esrforge carries over to an output.

    icc_profile: an ICC colour profile. exif: an EXIF block (TIFF-structured, without the
    'Exif\0\0' header; camera, date taken, location), with Orientation 1 since `read_image`
    turns images upright. png_text: (chunk type, chunk data) of a PNG's tEXt/zTXt/iTXt chunks,
    such as the generation parameters that Stable Diffusion front ends store."""

    icc_profile: bytes | None = None
    exif: bytes | None = None
    png_text: tuple[tuple[bytes, bytes], ...] = ()

    def colour_only(self) -> ImageMetadata:
        """The colour profile alone: what `--strip-metadata` keeps, since without it colours change."""
        return ImageMetadata(icc_profile=self.icc_profile)


_ICC_TIFF_TAG = 34675
_ICC_JPEG_HEADER = b"ICC_PROFILE\x00"
_ICC_JPEG_CHUNK = 65519  # an APP2 segment's 65533 data bytes less the header, sequence and count
_ICC_MAX = 255 * _ICC_JPEG_CHUNK  # the most a JPEG can hold (255 numbered segments); profiles are far smaller
_EXIF_HEADER = b"Exif\x00\x00"
_EXIF_JPEG_MAX = 65533 - len(_EXIF_HEADER)  # one APP1 segment
_EXIF_IFD_TAG, _EXIF_WIDTH_TAG, _EXIF_HEIGHT_TAG, _ORIENTATION_TAG = 0x8769, 0xA002, 0xA003, 0x0112
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")


def _icc_ok(profile: bytes | None) -> bytes | None:
    """The profile if its header holds together (stated size, 'acsp' signature), else None."""
    if profile is None or len(profile) < 128 or profile[36:40] != b"acsp":
        return None
    return profile if struct.unpack(">I", profile[:4])[0] == len(profile) else None


def icc_colour_space(profile: bytes) -> str:
    """The colour space a profile describes ('RGB', 'GRAY', 'CMYK', ...), from its header."""
    return profile[16:20].decode("latin-1").strip()


def icc_fits(profile: bytes, channels: int) -> bool:
    """Whether a profile can describe an image of `channels` channels (gray or colour, alpha aside)."""
    return icc_colour_space(profile) == ("GRAY" if channels in (1, 2) else "RGB")


def icc_profile(data: bytes) -> bytes | None:
    """The ICC profile embedded in an encoded PNG, JPEG, WebP or TIFF file, or None."""
    try:
        if data[:2] == b"\xff\xd8":
            parts: dict[int, bytes] = {}
            for marker, at, end in _jpeg_segments(data):
                if marker == 0xE2 and data[at : at + 12] == _ICC_JPEG_HEADER:
                    parts[data[at + 12]] = data[at + 14 : end]
            return _icc_ok(b"".join(parts[k] for k in sorted(parts))) if parts else None
        if data[:8] == _PNG_SIGNATURE:
            for kind, chunk in _png_header_chunks(data):
                if kind == b"iCCP":
                    name_end = chunk.index(b"\x00")
                    # Bounded: a 1 MB chunk can inflate to gigabytes. A JPEG holds at most 16 MB.
                    inflate = zlib.decompressobj()
                    profile = inflate.decompress(chunk[name_end + 2 :], _ICC_MAX)
                    return None if inflate.unconsumed_tail else _icc_ok(profile)
            return None
        for kind, at, size in _webp_chunks(data):
            if kind == b"ICCP":
                return _icc_ok(data[at : at + size])
        if data[:4] in _TIFF_MAGIC:
            for tag, kind, count, field_at in _tiff_entries(data):
                if tag == _ICC_TIFF_TAG and kind in (1, 7):  # BYTE or UNDEFINED
                    at = _tiff_values_at(data, field_at, count)
                    return _icc_ok(data[at : at + count])
    except (struct.error, ValueError, IndexError, zlib.error):
        pass  # a damaged profile is no profile; the pixels are still read
    return None


def image_metadata(data: bytes) -> ImageMetadata:
    """The metadata of an encoded image file that esrforge carries over (see ImageMetadata).

    EXIF is read from JPEG, PNG and WebP (a TIFF's EXIF is part of its own tag structure)."""
    exif: bytes | None = None
    text: list[tuple[bytes, bytes]] = []
    try:
        exif = _exif_block(data)
        if data[:8] == _PNG_SIGNATURE:  # text may follow the image data
            text = [(kind, data[at : at + size]) for kind, at, size in _png_chunks(data) if kind in _PNG_TEXT]
    except (struct.error, IndexError):
        pass
    return ImageMetadata(icc_profile(data), _exif_upright(exif), tuple(text))


def _exif_upright(exif: bytes | None) -> bytes | None:
    """The EXIF block with Orientation 1, as `read_image` turns images upright; None if it is not
    TIFF-structured. When the orientation was not 1, the thumbnail (the second IFD, stored the
    old way round) is unlinked rather than left to show turned."""
    if not exif or exif[:4] not in _TIFF_MAGIC:
        return None
    out = bytearray(exif)
    order = "<" if exif[:2] == b"II" else ">"
    value, at, _ = _tiff_short_tags(exif).get(_ORIENTATION_TAG, (1, 0, 0))
    if value != 1 and at:
        out[at : at + 2] = struct.pack(order + "H", 1)
        try:
            (ifd,) = struct.unpack(order + "I", exif[4:8])
            (count,) = struct.unpack(order + "H", exif[ifd : ifd + 2])
            next_at = ifd + 2 + 12 * count
            if next_at + 4 <= len(out):
                out[next_at : next_at + 4] = bytes(4)
        except struct.error:
            pass
    return bytes(out)


def _exif_sized(exif: bytes, height: int, width: int) -> bytes:
    """The EXIF block with the Exif IFD's pixel dimensions set to the output's, where the
    field is there and the value fits its type (they describe the original image otherwise)."""
    out = bytearray(exif)
    order = "<" if exif[:2] == b"II" else ">"
    try:
        pointer = next((at for tag, kind, _, at in _tiff_entries(exif) if tag == _EXIF_IFD_TAG and kind == 4), None)
        if pointer is None:
            return exif
        (sub,) = struct.unpack(order + "I", exif[pointer : pointer + 4])
        for tag, kind, count, at in _tiff_entries(exif, sub):
            value = {_EXIF_WIDTH_TAG: width, _EXIF_HEIGHT_TAG: height}.get(tag)
            if value is not None and count == 1 and (kind == 4 or (kind == 3 and value < 65536)):
                out[at : at + 4] = struct.pack(order + ("I" if kind == 4 else "HH"), value, *(() if kind == 4 else (0,)))
    except struct.error:
        return exif
    return bytes(out)


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, data start, data end) of a JPEG's marker segments before the first scan."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xDA, 0xD9):
            return
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        yield marker, pos + 4, pos + 2 + length
        pos += 2 + length


def _tiff_values_at(tiff: bytes, field_at: int, nbytes: int) -> int:
    """Where an entry's `nbytes` of values lie: in its own 4-byte field, or at the offset that
    field holds when they are longer."""
    if nbytes <= 4:
        return field_at
    return struct.unpack(("<" if tiff[:2] == b"II" else ">") + "I", tiff[field_at : field_at + 4])[0]


def _tiff_entries(tiff: bytes, ifd: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """(tag, type, count, offset of the value field) of each entry of a classic TIFF's IFD at
    offset `ifd` (default: the first)."""
    order = "<" if tiff[:2] == b"II" else ">"
    if struct.unpack(order + "H", tiff[2:4])[0] != 42:
        return  # BigTIFF has another entry layout
    if ifd is None:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    for at in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind, n = struct.unpack(order + "HHI", tiff[at : at + 8])
        yield tag, kind, n, at + 8


def _metadata_to_write(path: Path, meta: ImageMetadata | None, channels: int, shape: tuple[int, ...]) -> ImageMetadata | None:
    """What of `meta` goes into `path`: a colour profile that fits the stored channels, EXIF
    where the format has a place for it (resized to `shape`), PNG text in PNG."""
    if meta is None:
        return None
    ext = path.suffix.lower()
    profile = meta.icc_profile
    if profile is not None:
        if _icc_ok(bytes(profile)) is None:
            raise ImageError(f"{path}: the icc_profile given is not an ICC profile (no 'acsp' signature or a wrong size)")
        kind = "gray" if channels in (1, 2) else "RGB"
        if not icc_fits(profile, channels):
            warnings.warn(f"{path}: written without the {icc_colour_space(profile)} colour profile, which does not describe {kind} images", stacklevel=3)
            profile = None
        elif ext == ".bmp":
            warnings.warn(f"{path}: written without its colour profile (esrforge writes none into BMP; use png or tiff)", stacklevel=3)
            profile = None
    if profile is not None and ext in (".jpg", ".jpeg") and len(profile) > _ICC_MAX:
        warnings.warn(f"{path}: written without its colour profile ({len(profile)} bytes; a JPEG holds at most {_ICC_MAX})", stacklevel=3)
        profile = None
    exif = meta.exif if ext in (".png", ".jpg", ".jpeg", ".webp") else None
    if exif is not None and ext in (".jpg", ".jpeg") and len(exif) > _EXIF_JPEG_MAX:
        warnings.warn(f"{path}: written without its EXIF block ({len(exif)} bytes; a JPEG holds at most {_EXIF_JPEG_MAX})", stacklevel=3)
        exif = None
    if exif is not None:
        exif = _exif_sized(bytes(exif), shape[0], shape[1])
    return ImageMetadata(None if profile is None else bytes(profile), exif, meta.png_text if ext == ".png" else ())


def _embed_metadata(name: str, ext: str, meta: ImageMetadata, shape: tuple[int, ...]) -> None:
    """Splice `meta` into the PNG, JPEG or WebP file `name` (as encoded by OpenCV or our PNG writer)."""
    profile, exif = meta.icc_profile, meta.exif
    if profile is None and exif is None and not meta.png_text:
        return
    append = b""  # what goes at the end of the file (WebP's EXIF chunk)
    with open(name, "rb") as f:
        head = f.read(64)
        if ext == ".png":  # before the image data; right after IHDR is always right
            cut = resume = 33
            insert = _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(profile, 9)) if profile else b""
            insert += _png_chunk(b"eXIf", exif) if exif else b""
            insert += b"".join(_png_chunk(kind, data) for kind, data in meta.png_text)
        elif ext in (".jpg", ".jpeg"):  # after SOI and the JFIF APP0 that must lead: APP1 EXIF, APP2 ICC
            cut = resume = 2 + (2 + struct.unpack(">H", head[4:6])[0] if head[2:4] == b"\xff\xe0" else 0)
            insert = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(exif)) + _EXIF_HEADER + exif if exif else b""
            parts = [profile[i : i + _ICC_JPEG_CHUNK] for i in range(0, len(profile), _ICC_JPEG_CHUNK)] if profile else []
            insert += b"".join(
                b"\xff\xe2" + struct.pack(">H", 2 + 14 + len(p)) + _ICC_JPEG_HEADER + bytes([i + 1, len(parts)]) + p
                for i, p in enumerate(parts)
            )
        elif ext == ".webp":
            cut, resume, insert = _webp_header_insert(head, meta, shape)
            append = b"EXIF" + struct.pack("<I", len(exif)) + exif + b"\x00" * (len(exif) & 1) if exif else b""
        else:
            return
        f.seek(resume)
        with open(name + ".meta", "wb") as out:
            out.write(head[:cut] + insert)
            shutil.copyfileobj(f, out, 1 << 20)
            out.write(append)
            if ext == ".webp":  # the RIFF size covers everything after its first 8 bytes
                size = out.tell()
                out.seek(4)
                out.write(struct.pack("<I", size - 8))
    os.replace(name + ".meta", name)


def _webp_header_insert(head: bytes, meta: ImageMetadata, shape: tuple[int, ...]) -> tuple[int, int, bytes]:
    """Where a WebP's bytes are cut, where they resume, and what goes between: a VP8X chunk with
    the ICC and EXIF flags set (the file's own, or a new one for a simple WebP), then ICCP."""
    profile = meta.icc_profile
    iccp = b"ICCP" + struct.pack("<I", len(profile)) + profile + b"\x00" * (len(profile) & 1) if profile else b""
    flags = (0x20 if profile else 0) | (0x08 if meta.exif else 0)
    if head[12:16] == b"VP8X":  # already extended (lossy with alpha)
        vp8x = bytes([head[20] | flags]) + head[21:30]
        return 12, 30, b"VP8X" + struct.pack("<I", 10) + vp8x + iccp
    h, w = shape[:2]
    alpha = 0x10 if len(shape) == 3 and shape[2] in (2, 4) else 0
    vp8x = bytes([flags | alpha, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return 12, 12, b"VP8X" + struct.pack("<I", 10) + vp8x + iccp


def _tiff_set_tags(name: str, tags: list[tuple[int, int, bytes | tuple[int, ...]]]) -> None:
    """Add or replace (tag, type, value) entries of a classic TIFF's first IFD; value is bytes for
    type 7 (UNDEFINED) and SHORTs for type 3. A copy of the IFD with the entries is appended, after
    any values too long to sit in an entry, and the header pointed at it; the old IFD stays as
    unreferenced bytes. The image data is not moved."""
    with open(name, "r+b") as f:
        header = f.read(8)
        if header[:4] not in _TIFF_MAGIC:
            return  # BigTIFF (OpenCV writes it only for images over 4 GB): left as it is
        order = "<" if header[:2] == b"II" else ">"
        (ifd,) = struct.unpack(order + "I", header[4:8])
        f.seek(ifd)
        (count,) = struct.unpack(order + "H", f.read(2))
        entries = {struct.unpack(order + "H", e[:2])[0]: e for e in (f.read(12) for _ in range(count))}
        next_ifd = f.read(4)
        at = f.seek(0, os.SEEK_END)
        tail = b""
        for tag, kind, value in tags:
            data = value if isinstance(value, bytes) else struct.pack(order + "H" * len(value), *value)
            n = len(data) // (2 if kind == 3 else 1)
            if len(data) <= 4:  # fits in the entry itself
                entries[tag] = struct.pack(order + "HHI", tag, kind, n) + data.ljust(4, b"\x00")
                continue
            pad = (at + len(tail)) & 1  # TIFF offsets are word-aligned
            tail += b"\x00" * pad
            entries[tag] = struct.pack(order + "HHII", tag, kind, n, at + len(tail))
            tail += data
        tail += b"\x00" * ((at + len(tail)) & 1)
        ifd_at = at + len(tail)
        f.write(tail + struct.pack(order + "H", len(entries)) + b"".join(entries[t] for t in sorted(entries)) + next_ifd)
        f.seek(4)  # tags ascend, as TIFF requires, in the copy
        f.write(struct.pack(order + "I", ifd_at))
