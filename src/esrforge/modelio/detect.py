"""Detect a state dict's architecture and layout, and read every hyperparameter from shapes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from esrforge.archs import build
from esrforge.archs import compact as compact_arch
from esrforge.archs import rrdbnet as rrdb_arch
from esrforge.modelio.files import ModelFileError

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class ModelDescriptor:
    """What the tiler and the commands need to know about a loaded generator."""

    arch: str  # "rrdbnet" | "compact"
    layout: str  # layout found in the file: "original" | "newarch" | "basicsr" | "compact"
    hparams: dict[str, Any]
    scale: int
    in_ch: int
    out_ch: int
    multiple_of: int = 1  # input height and width must be multiples of this (pixel unshuffle)
    supports_half: bool = True
    supports_bf16: bool = True
    num_params: int = 0
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def info(self) -> dict[str, Any]:
        """The `esrforge info --json` record."""
        h = self.hparams
        out: dict[str, Any] = {
            "file": self.source,
            "arch": self.arch,
            "layout": self.layout,
            "scale": self.scale,
            "in_channels": self.in_ch,
            "out_channels": self.out_ch,
            "num_feat": h["num_feat"],
        }
        if self.arch == "rrdbnet":
            out.update(num_block=h["num_block"], num_grow_ch=h["num_grow_ch"], pixel_unshuffle=h["unshuffle"], plus=h.get("plus", False))
        else:
            out.update(num_conv=h["num_conv"], activation=h["activation"])
        out["params"] = self.num_params
        return out


@dataclass
class LoadedModel:
    """A generator module (eval mode, on CPU, fp32) with its descriptor."""

    module: nn.Module
    descriptor: ModelDescriptor

    def __call__(self, x: Tensor) -> Tensor:
        return self.module(x)


def _has(sd: StateDict, *keys: str) -> bool:
    return all(k in sd for k in keys)


def _looks_like(sd: StateDict) -> str | None:
    """Name what a non-generator state dict looks like, for the error message."""
    keys = list(sd)
    if _has(sd, "conv0_0.weight", "conv0_1.weight") and any(k.startswith("linear") for k in keys):
        return "a VGG-style discriminator (BasicSR VGGStyleDiscriminator)"
    if any(k.startswith("features.") for k in keys) and any(k.startswith("classifier.") for k in keys):
        return "a VGG classifier / discriminator (features.* + classifier.*)"
    if any(k.startswith("features.") for k in keys):
        return "a VGG feature extractor (perceptual-loss network)"
    if _has(sd, "conv0.weight") and any(k.startswith("conv9.") for k in keys):
        return "a U-Net discriminator (Real-ESRGAN UNetDiscriminatorSN)"
    if any(k.startswith("discs.0.model.") for k in keys):
        return "a multi-scale PatchGAN discriminator"
    # spectral norm keeps the raw weight as weight_orig
    first = sd.get("model.0.weight", sd.get("model.0.weight_orig"))
    if first is not None and first.ndim == 4 and first.shape[-1] == 4:
        return "a PatchGAN discriminator (4x4 convs)"
    if any(re.match(r"^(net_d|discriminator|netD)\.", k) for k in keys):
        return "a discriminator"
    other = next((name for name, rule in _OTHER_SR if rule(sd)), None)
    if other:
        return f"{other}; spandrel (which chaiNNer and ComfyUI use) runs it"
    if any(".attn." in k for k in keys):
        return "a transformer super-resolution model"
    return None


# Other super-resolution architectures people hold beside ESRGAN ones, by keys their files carry
# (as spandrel's detectors know them), so the error can say what a file is.
_OTHER_SR = (
    ("a HAT model", lambda sd: "relative_position_index_SA" in sd or any(".conv_block." in k for k in sd)),
    ("a DAT model", lambda sd: "before_RG.1.weight" in sd),
    ("a SwinIR model", lambda sd: any(k.startswith("layers.0.residual_group.") for k in sd)),
    ("a SPAN model", lambda sd: "block_1.c1_r.sk.weight" in sd or "conv_1.sk.weight" in sd),
    ("an OmniSR model", lambda sd: "input.weight" in sd and any(k.startswith("residual_layer.") for k in sd)),
)


def detect(sd: StateDict, *, source: str = "<memory>", meta: dict[str, str] | None = None) -> tuple[str, str, StateDict, dict[str, Any]]:
    """Return (arch, layout, state dict in the module's own key names, hyperparameters)."""
    meta = meta or {}
    # Channel counts esrforge wrote into a safetensors header settle what shapes leave open.
    in_ch, out_ch = (_channels(meta.get(k, "")) for k in ("in_ch", "out_ch"))
    try:
        if _has(sd, "model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"):
            conv = rrdb_arch.original_to_basicsr(sd)
            return "rrdbnet", "original", conv, rrdb_arch.hparams_from_basicsr(conv, in_ch=in_ch)
        if _has(sd, "conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight"):
            conv = rrdb_arch.newarch_to_basicsr(sd)
            return "rrdbnet", "newarch", conv, rrdb_arch.hparams_from_basicsr(conv, in_ch=in_ch)
        if _has(sd, "conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight"):
            return "rrdbnet", "basicsr", dict(sd), rrdb_arch.hparams_from_basicsr(sd, in_ch=in_ch)
        if "body.0.weight" in sd and all(re.match(r"^body\.\d+\.(weight|bias)$", k) for k in sd):
            act = meta.get("activation")
            return "compact", "compact", dict(sd), compact_arch.hparams_from_state_dict(sd, act, out_ch=out_ch)
    except KeyError as e:
        raise ModelFileError(f"{source}: damaged or unsupported ESRGAN-family layout: {e.args[0]}") from None
    except (IndexError, ArithmeticError) as e:  # shapes too few or zero where the layout needs them
        raise ModelFileError(f"{source}: damaged ESRGAN-family weights ({type(e).__name__}: {e})") from None
    found = _looks_like(sd)
    if found:
        what, _, hint = found.partition("; ")
        raise ModelFileError(f"{source}: this looks like {what}, not an ESRGAN-family generator" + (f"; {hint}" if hint else ""))
    sample = ", ".join(list(sd)[:4])
    raise ModelFileError(f"{source}: unknown model layout ({len(sd)} tensors; first keys: {sample})")


def _channels(text: str) -> int | None:
    """A channel count from esrforge's safetensors metadata, or None where it is not one."""
    return int(text) if text.isascii() and text.isdecimal() and len(text) <= 4 and int(text) > 0 else None


def describe(arch: str, layout: str, hparams: dict[str, Any], module: nn.Module, source: str, notes: tuple[str, ...] = ()) -> ModelDescriptor:
    unshuffle = int(hparams.get("unshuffle", 1))
    return ModelDescriptor(
        arch=arch,
        layout=layout,
        hparams=dict(hparams),
        scale=int(hparams["scale"]),
        in_ch=int(hparams["in_ch"]),
        out_ch=int(hparams["out_ch"]),
        multiple_of=unshuffle,
        num_params=sum(p.numel() for p in module.parameters()),
        source=source,
        notes=notes,
    )


def from_state_dict(sd: StateDict, *, source: str = "<memory>", meta: dict[str, str] | None = None) -> LoadedModel:
    """Build the generator for a raw (unwrapped) state dict and load its weights strictly."""
    arch, layout, conv, hparams = detect(sd, source=source, meta=meta)
    try:
        with torch.device("meta"):  # shapes first: a damaged file's sizes are not allocated
            want = build(arch, **hparams).state_dict()
    except ValueError as e:  # shapes that read consistently but describe what esrforge does not build (x16)
        raise ModelFileError(f"{source}: unsupported {arch} model: {e}") from None
    bad = [k for k in want if k not in conv or conv[k].shape != want[k].shape]
    extra = [k for k in conv if k not in want]
    if bad or extra:
        detail = ", ".join(
            [f"{k} {tuple(conv[k].shape)} vs {tuple(want[k].shape)}" if k in conv else f"missing {k}" for k in bad[:3]]
            + [f"unexpected {k}" for k in extra[:3]]
        )
        raise ModelFileError(f"{source}: inconsistent {arch} weights (damaged file?): {detail}")
    broken = [k for k, v in conv.items() if not bool(torch.isfinite(v).all())]
    if broken:  # every output would be NaN: black images, written without a word
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise ModelFileError(f"{source}: {', '.join(broken[:3])}{more} hold NaN or infinite values (a damaged file, or saved from a run that diverged)")
    try:
        module = build(arch, **hparams)
    except RuntimeError as e:  # allocation: a consistent but enormous network
        raise ModelFileError(f"{source}: cannot build the {arch} model ({str(e).splitlines()[0]})") from None
    module.load_state_dict({k: v.float() for k, v in conv.items()})
    module.eval().requires_grad_(False)
    notes: tuple[str, ...] = ()
    if arch == "compact" and hparams["activation"] != "prelu" and "activation" not in (meta or {}):
        notes = ("activation is not stored in the weights (no PReLU); assumed relu",)
    return LoadedModel(module, describe(arch, layout, hparams, module, source, notes))
