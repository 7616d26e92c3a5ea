"""Files written whole or not at all: a temporary name in the same folder, then a rename; and
the one-line text of a file's error.

Kept free of torch and OpenCV so that image I/O and the command line do not import them."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(path: str | os.PathLike[str], write: Any) -> None:
    """Call `write(tmp_path)` to produce the file under a temporary name, then rename it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except (FileExistsError, NotADirectoryError):  # a file where a folder of the path should be
        raise OSError(errno.ENOTDIR, "cannot create it: a file is in the way of its folder", str(path)) from None
    except OSError as e:  # the error names the file asked for, not the temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename == tmp:  # a full disk, say: name the file being written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def error_text(e: BaseException) -> str:
    """An exception as one line; an OSError as `file: reason`, not `[Errno 13] ...: 'file'`."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    text = str(e)
    if text.startswith("OpenCV("):  # cv2.error: "OpenCV(5.0.0) /io/.../alloc.cpp:73: error: (-4:...) what\n"
        text = "OpenCV: " + " ".join(text.split(" error: ", 1)[-1].split())
    return text


def file_error_text(src: Path, e: BaseException) -> str:
    """The error of one file's job as one line, led by the file's name unless it names it
    already. The kinds a damaged or unwritable file raises (ValueError, which ImageError and
    DatasetError are; OSError; MemoryError; OpenCV's error) speak for themselves; any other is
    named, since its message alone may mean nothing."""
    text = error_text(e)
    if not isinstance(e, (ValueError, OSError, MemoryError)) and type(e).__module__ != "cv2":  # cv2 not imported here
        text = f"unexpected {type(e).__name__}: {text}"
    return text if str(src) in text else f"{src}: {text}"
