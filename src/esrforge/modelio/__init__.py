"""Model files: safe loading, architecture detection, and saving."""

from __future__ import annotations

import os

from esrforge.modelio.bundled import BUNDLED, DEFAULT_MODEL, resolve_model
from esrforge.modelio.detect import LoadedModel, ModelDescriptor, detect, from_state_dict
from esrforge.modelio.files import ModelFileError, read_raw, unwrap
from esrforge.modelio.save import save_model


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Load any supported ESRGAN-family file, or a bundled model by name (`esrforge models`):
    the module (eval, CPU, fp32) plus its descriptor."""
    path = resolve_model(path)
    raw, meta = read_raw(path)
    sd = unwrap(raw, path)
    return from_state_dict(sd, source=str(path), meta=meta)


__all__ = ["BUNDLED", "DEFAULT_MODEL", "resolve_model", "LoadedModel", "ModelDescriptor", "ModelFileError", "detect", "from_state_dict", "load_model", "read_raw", "save_model", "unwrap"]
