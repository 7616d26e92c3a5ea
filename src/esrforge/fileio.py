"""Files written whole or not at all: a temporary name in the same folder, then a rename.

Kept free of torch so that image I/O does not import it."""

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
