"""Writing generators in the layouts other tools open unchanged."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from esrforge import __version__
from esrforge.archs import rrdbnet as rrdb_arch
from esrforge.fileio import atomic_save
from esrforge.modelio.detect import ModelDescriptor
from esrforge.modelio.files import PICKLE_SUFFIXES, ModelFileError

StateDict = dict[str, Tensor]

LAYOUTS = ("basicsr", "original")


def export_state_dict(sd: StateDict, arch: str, layout: str = "basicsr", half: bool = False) -> StateDict:
    """The module's state dict in a file layout, contiguous and unshared (safetensors needs both)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "original":
        if arch != "rrdbnet":
            raise ValueError(f"layout 'original' exists only for RRDBNet, not {arch}")
        sd = rrdb_arch.basicsr_to_original(sd)
    dtype = torch.float16 if half else torch.float32
    return {k: v.detach().to("cpu", dtype).contiguous().clone() for k, v in sd.items()}


def metadata(desc: ModelDescriptor, layout: str) -> dict[str, str]:
    """safetensors metadata: string values only, hyperparameters flat and as JSON."""
    meta = {"format": "pt", "arch": desc.arch, "layout": layout, "esrforge_version": __version__}
    meta.update({k: str(v) for k, v in desc.hparams.items()})
    meta["hparams"] = json.dumps(desc.hparams, sort_keys=True)
    return meta


def default_layout(desc: ModelDescriptor) -> str:
    """BasicSR's key names, except for ESRGAN+: other tools (spandrel, so chaiNNer and ComfyUI)
    know its extra 1x1 convs only under the original release's names and silently drop them
    under BasicSR-style ones."""
    return "original" if desc.arch == "rrdbnet" and desc.hparams.get("plus") else "basicsr"


def save_model(
    path: str | os.PathLike[str],
    sd: StateDict,
    desc: ModelDescriptor,
    *,
    layout: str | None = None,
    half: bool = False,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Save a generator; the format follows the extension (.safetensors, or .pth/.pt/.ckpt).
    extra_metadata goes into a safetensors header (ignored for pickles).

    Pickles in BasicSR layout are wrapped as {"params_ema": ...} (what Real-ESRGAN, chaiNNer and
    ComfyUI expect); the original layout is saved as a bare state dict, as the 2018 release was.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    layout = layout or default_layout(desc)
    act = desc.hparams.get("activation")
    if suffix in PICKLE_SUFFIXES and desc.arch == "compact" and act not in (None, "prelu", "relu"):
        # Only PReLU has weights; without them every loader (esrforge's too) reads relu.
        warnings.warn(f"{path}: a .pth file cannot record the {act} activation, and loaders will take it for relu;"
                      " save as .safetensors to keep it", stacklevel=2)
    if suffix in PICKLE_SUFFIXES and desc.arch == "compact" and desc.in_ch != desc.out_ch:
        # Loaders (esrforge's, spandrel's) read a compact .pth's out_ch as its in_ch: the file
        # would not load back at all.
        raise ModelFileError(f"{path}: a .pth file cannot record this compact model's {desc.in_ch} -> {desc.out_ch} "
                             "channels, and would not load back; save as .safetensors")
    out = export_state_dict(sd, desc.arch, layout, half)
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = {**metadata(desc, layout), **(extra_metadata or {})}
        atomic_save(path, lambda tmp: save_file(out, tmp, metadata=meta))
    elif suffix in PICKLE_SUFFIXES:
        obj = {"params_ema": out} if layout == "basicsr" else out
        atomic_save(path, lambda tmp: torch.save(obj, tmp))
    else:
        raise ModelFileError(f"{path}: unknown model format {suffix or '(no extension)'}; use .safetensors or .pth")
    return path
