"""Reading and writing model files safely: safetensors, or pickles restricted to plain tensors."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

StateDict = dict[str, Tensor]

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
MODEL_SUFFIXES = PICKLE_SUFFIXES + (".safetensors",)

# Container keys seen in the wild, in order of preference (EMA weights are what users want).
_CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "generator", "net_g")


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and says what was found."""


def read_raw(path: str | os.PathLike[str]) -> tuple[Any, dict[str, str]]:
    """Load a file's top-level object without executing any code from it.

    Returns (object, metadata); metadata is the safetensors header metadata or {}.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=None)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Unsupported global" in str(e) or "Unsupported operand" in str(e) or "GLOBAL" in str(e):
            raise ModelFileError(
                f"{path}: refused: the file contains pickled code or objects, not only tensors "
                f"(loaded with weights_only=True; nothing from it was run): {first}"
            ) from None
        raise ModelFileError(f"{path}: not a readable PyTorch file ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path}: truncated or not a PyTorch model file ({first})") from None
    return obj, {}


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path}: truncated or not a safetensors file ({first})") from None
    return tensors, meta


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def unwrap(obj: Any, path: str | os.PathLike[str] = "<memory>") -> StateDict:
    """Find the generator state dict inside the usual containers and strip `module.` prefixes."""
    seen = 0
    while not _is_state_dict(obj):
        seen += 1
        if not isinstance(obj, dict) or not obj or seen > 4:
            raise ModelFileError(f"{path}: no tensors found (top-level object is {type(obj).__name__})")
        key = next((k for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict) and obj[k]), None)
        if key is None:
            dicts = [k for k, v in obj.items() if isinstance(v, dict) and v]
            if len(dicts) == 1 and (len(obj) == 1 or not any(isinstance(v, Tensor) for v in obj.values())):
                key = dicts[0]
        if key is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
            if tensors:
                obj = tensors
                break
            raise ModelFileError(f"{path}: no state dict found; top-level keys: {', '.join(map(str, list(obj)[:8]))}")
        obj = obj[key]
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(path: str | os.PathLike[str], write: Any) -> None:
    """Call `write(tmp_path)` to produce the file under a temporary name, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(data))
