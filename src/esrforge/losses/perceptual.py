"""Perceptual loss on VGG19 features, without torchvision.

`VGG19Features` reproduces torchvision's `vgg19().features` (same `features.N` indices), so its
checkpoint file `vgg19-dcbb9e9d.pth` loads with strict key checking; the classifier is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
_BLOCKS = (2, 2, 4, 4, 4)  # convs per block
_CHANNELS = (64, 128, 256, 512, 512)


def vgg19_layers() -> tuple[list[nn.Module], dict[str, int]]:
    """torchvision's VGG19 `features` sequence, and each named layer's index in it."""
    layers: list[nn.Module] = []
    names: dict[str, int] = {}
    prev = 3
    for b, (n, c) in enumerate(zip(_BLOCKS, _CHANNELS), start=1):
        for i in range(1, n + 1):
            names[f"conv{b}_{i}"] = len(layers)
            layers.append(nn.Conv2d(prev, c, 3, 1, 1))
            names[f"relu{b}_{i}"] = len(layers)
            layers.append(nn.ReLU(inplace=False))  # captured conv outputs must stay pre-activation
            prev = c
        names[f"pool{b}"] = len(layers)
        layers.append(nn.MaxPool2d(2, 2))
    return layers, names


def load_vgg19_weights(path: str | os.PathLike[str] | None) -> dict[str, Tensor]:
    """torchvision's VGG19 checkpoint (only tensors are unpickled). Without a path, torch hub's
    cache file is used if present."""
    if path is None:
        home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        cached = home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
        if not cached.is_file():
            raise FileNotFoundError(
                f"VGG19 weights not found (looked for {cached}); download {VGG19_URL} and set "
                "losses.perceptual.vgg_weights: PATH"
            )
        path = cached
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such VGG19 weights file (torchvision's is {VGG19_URL})")
    return torch.load(path, map_location="cpu", weights_only=True)


class VGG19Features(nn.Module):
    """Frozen VGG19 that returns the requested layers' outputs for [0, 1] RGB inputs."""

    def __init__(self, layers: list[str], state_dict: dict[str, Tensor]) -> None:
        super().__init__()
        seq, names = vgg19_layers()
        unknown = [l for l in layers if l not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
        self.wanted = {names[l]: l for l in layers}
        self.features = nn.Sequential(*seq[: max(self.wanted) + 1])  # nothing past the deepest layer
        want = {k for k in self.features.state_dict()}
        got = {k: v for k, v in state_dict.items() if k.startswith("features.")}
        missing = sorted(k for k in want if f"features.{k}" not in got)
        if missing:
            raise ValueError(f"VGG19 weights lack {', '.join('features.' + k for k in missing[:4])}")
        self.features.load_state_dict({k: got[f"features.{k}"].float() for k in want})
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # always eval: it is a fixed feature extractor

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.wanted:
                out[self.wanted[i]] = x
        return out


class PerceptualLoss(nn.Module):
    """weight * sum_l w_l * criterion(VGG_l(sr), VGG_l(hr)).

    With pre_activation (ESRGAN), `convX_Y` means the conv output before its ReLU; otherwise the
    same name is taken after the ReLU."""

    def __init__(
        self,
        layers: dict[str, float],
        *,
        weight: float = 1.0,
        criterion: str = "l1",
        vgg_weights: str | None = None,
        pre_activation: bool = True,
        state_dict: dict[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        if criterion not in ("l1", "mse"):
            raise ValueError(f"perceptual criterion must be l1 or mse, got {criterion!r}")
        names = {l if pre_activation or not l.startswith("conv") else "relu" + l[4:]: w for l, w in layers.items()}
        self.layer_weights = names
        self.weight, self.criterion = weight, criterion
        self.vgg = VGG19Features(list(names), state_dict if state_dict is not None else load_vgg19_weights(vgg_weights))

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        f_sr = self.vgg(sr)
        with torch.no_grad():
            f_hr = self.vgg(hr.detach())
        loss = sr.new_zeros(())
        for name, w in self.layer_weights.items():
            d = f_sr[name] - f_hr[name]
            loss = loss + w * (d.abs().mean() if self.criterion == "l1" else (d * d).mean())
        return self.weight * loss
