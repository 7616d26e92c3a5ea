"""Models that ship inside the package, trained by esrforge itself (configs/models/, docs/models.md).

A model argument is resolved as: an existing file first, else a bundled model name. The list is
literal so that `grep` finds every bundled model and its weights file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from esrforge.modelio.files import ModelFileError


@dataclass(frozen=True)
class BundledModel:
    name: str
    file: str  # under esrforge/weights/
    summary: str
    config: str  # the committed training config that reproduces it (its last stage)
    # Earlier stages, trained first in this order; each next config fine-tunes the previous
    # stage's final weights (scripts/train_bundled.py sets its pretrain.generator).
    stages: tuple[str, ...] = ()


BUNDLED: tuple[BundledModel, ...] = (
    BundledModel(
        "photo_x4",
        "photo_x4.safetensors",
        "x4 photos, PSNR-oriented (faithful, no invented detail); the default",
        "configs/models/photo_x4.yml",
        stages=("configs/models/photo_x4_base.yml",),
    ),
    BundledModel(
        "photo_x4_gan",
        "photo_x4_gan.safetensors",
        "x4 photos, GAN fine-tune of photo_x4 (sharper edges and texture, may invent detail)",
        "configs/models/photo_x4_gan.yml",
    ),
)
DEFAULT_MODEL = "photo_x4"


def weights_dir() -> Path:
    return Path(str(resources.files("esrforge") / "weights"))


def find_bundled(name: str) -> BundledModel:
    for m in BUNDLED:
        if m.name == name:
            return m
    raise ModelFileError(f"{name!r} is not a bundled model; bundled: {', '.join(m.name for m in BUNDLED)}")


def bundled_path(name: str) -> Path:
    """The weights file of a bundled model; a clear error if this installation lacks it."""
    m = find_bundled(name)
    path = weights_dir() / m.file
    if not path.is_file():
        raise ModelFileError(
            f"bundled model {name!r}: its weights file {path} is missing from this installation "
            f"(reinstall esrforge, or rebuild it with `python scripts/train_bundled.py {name}`)"
        )
    return path


def resolve_model(spec: str | os.PathLike[str]) -> Path:
    """A model argument as a file path: an existing file, else a bundled model's weights."""
    path = Path(spec)
    if path.is_file():
        return path
    name = str(spec)
    if any(m.name == name for m in BUNDLED):
        return bundled_path(name)
    if path.exists():
        raise ModelFileError(f"{path}: is a folder, not a model file")
    raise ModelFileError(
        f"{spec}: no such model file, and not a bundled model name ({', '.join(m.name for m in BUNDLED)})"
    )
