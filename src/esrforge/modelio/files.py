"""Reading and writing model files safely: safetensors, or pickles restricted to plain tensors."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

StateDict = dict[str, Tensor]

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
MODEL_SUFFIXES = PICKLE_SUFFIXES + (".safetensors",)

# Prefixes that wrappers add to every key: (Distributed)DataParallel, torch.compile (whose wrapped
# module's state dict is what traiNNer-style trainers save when compiling), and the generator
# attribute of a GAN training module.
_GENERATOR_PREFIXES = ("netG.", "net_g.", "generator.")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", *_GENERATOR_PREFIXES)
# Container keys seen in the wild, in order of preference (EMA weights are what users want).
_CONTAINER_KEYS = ("params_ema", "params-ema", "params", "model_state_dict", "state_dict", "model", "net", "generator", "net_g")


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and says what was found."""


def read_raw(path: str | os.PathLike[str]) -> tuple[Any, dict[str, str]]:
    """Load a file's top-level object without executing any code from it.

    Returns (object, metadata); metadata is the safetensors header metadata or {}.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    kind = _sniff(path)
    if kind == "safetensors" or (kind is None and path.suffix.lower() == ".safetensors"):
        return _read_safetensors(path)  # by content: community files are sometimes misnamed
    if kind not in ("torch", None):
        raise ModelFileError(f"{path}: not a model file: it is {kind}")
    if kind is None and path.suffix.lower() == ".onnx":
        raise ModelFileError(f"{path}: an ONNX model; esrforge reads PyTorch (.pth, .pt, .ckpt) and .safetensors model files")
    if kind is None and path.suffix.lower() == ".bin" and path.with_suffix(".param").exists():
        raise ModelFileError(f"{path}: an NCNN model's weights; esrforge reads the PyTorch (.pth) or .safetensors release of a model")
    if kind == "torch" and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise ModelFileError(f"{path}: truncated or not a PyTorch model file (a damaged zip: {e})") from None
        if not any(n.endswith("data.pkl") for n in names):  # torch's zips hold <name>/data.pkl
            inside = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            raise ModelFileError(f"{path}: a zip archive, not a model file ({inside}); extract the model from it")
    try:
        with open(path, "rb") as f:  # a file object: torch.load dispatches on a ".safetensors" name
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why, msg = _torch_reason(e), str(e)
        # An unknown opcode in a real pickle is code (INST, OBJ); in anything else, just bytes.
        name = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", msg)  # torch >= 2.4 | torch 2.3
        if name and name.group(1).rsplit(".", 1)[-1][:1].isupper():  # a class: torch.save(model), not (model.state_dict())
            raise ModelFileError(
                f"{path}: refused: it holds a whole pickled Python object ({name.group(1)}), not only tensors, and "
                "loading it would run that class's code (weights_only=True; nothing from it was run); "
                "where it was made, save model.state_dict() instead"
            ) from None
        if name or "Unsupported global" in msg or (kind == "torch" and "Unsupported operand" in msg):
            raise ModelFileError(
                f"{path}: refused: the file contains pickled code or objects, not only tensors "
                f"(loaded with weights_only=True; nothing from it was run): {why}"
            ) from None
        raise ModelFileError(f"{path}: not a PyTorch or safetensors model file ({why})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path}: truncated or not a PyTorch model file ({first})") from None
    except Exception as e:  # damaged bytes reach torch's unpickler as KeyError, IndexError, TypeError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelFileError(f"{path}: truncated or not a PyTorch model file ({type(e).__name__}{': ' + first if first else ''})") from None
    return obj, {}


# Files people pass as -m by mistake, by their first bytes.
_NOT_MODELS = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"BM", "a BMP image"), (b"\x1f\x8b", "gzip data"),
    (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"), (b"<", "a text/HTML file (a download page?)"),
    (b"7767517", "an NCNN model's .param file; esrforge reads the PyTorch (.pth) or .safetensors release of a model"),
)


def _sniff(path: Path) -> str | None:
    """'safetensors', 'torch' (a zip or a protocol 2+ pickle), what else it is, or None if unknown."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100 << 20:
        return "safetensors"  # an 8-byte header length, then the JSON header
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image"
    return next((what for magic, what in _NOT_MODELS if head.startswith(magic)), None)


def _torch_reason(e: Exception) -> str:
    """What torch.load's weights_only check found, without its advice: that advice (load with
    weights_only=False, or allowlist the global) is how a malicious file gets to run."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    keep = []
    for line in text.splitlines():
        line = re.split(r"\.?\s+Please (?:use|file)", line.strip(), maxsplit=1)[0].strip()
        if line and not line.startswith(("Weights only load failed", "Check the documentation", "(1)", "(2)")):
            keep.append(line)
    return "; ".join(keep) or type(e).__name__


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
    """Find the generator state dict inside the usual containers and strip wrapper prefixes."""
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
    for g in _GENERATOR_PREFIXES:  # a whole GAN module's state (Lightning): its generator
        mine = {k: v for k, v in sd.items() if k.startswith(g)}
        if mine and len(mine) < len(sd) and all(k.startswith(("netD.", "net_d.", "discriminator.")) for k in sd if k not in mine):
            sd = mine
    stripped = True
    while stripped:  # in any order and nesting: module._orig_mod.conv_first...
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
    _check_tensors(sd, path)
    return sd


def _check_tensors(sd: StateDict, path: str | os.PathLike[str]) -> None:
    """Refuse tensors no saved weights are: sparse, meta or quantized ones, and ones whose storage
    is smaller than their elements (a stride-0 expand: a 2 KB file then declares a layer
    wide enough to allocate gigabytes when the network is built)."""
    for k, v in sd.items():
        if v.layout != torch.strided or v.is_meta or v.is_quantized:
            kind = "meta" if v.is_meta else "quantized" if v.is_quantized else str(v.layout).removeprefix("torch.")
            raise ModelFileError(f"{path}: tensor {k} is a {kind} tensor, not stored weights")
        if v.numel() and v.untyped_storage().nbytes() < v.numel() * v.element_size():
            raise ModelFileError(f"{path}: tensor {k} {tuple(v.shape)} has storage for fewer values than it holds (crafted or damaged)")
