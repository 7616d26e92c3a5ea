"""esrforge: train and run ESRGAN-family super-resolution models."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from esrforge.infer.upscale import upscale_image
    from esrforge.modelio import load_model, save_model

# Importing the package stays cheap (no torch) until an API function is used.
_LAZY = {"load_model": "esrforge.modelio", "upscale_image": "esrforge.infer.upscale", "save_model": "esrforge.modelio"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'esrforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])  # the lazy API shows up in completion too


__all__ = ["__version__", "load_model", "save_model", "upscale_image"]
