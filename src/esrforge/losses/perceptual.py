"""Perceptual loss on VGG19 features, without torchvision.

`VGG19Features` rebuilds torchvision's `vgg19().features` with the same `features.N` indices,
so torchvision's checkpoint `vgg19-dcbb9e9d.pth` loads with strict key checking (its
`classifier.*` keys are ignored: only convolutional features are used).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILE = "vgg19-dcbb9e9d.pth"
_BLOCKS = (2, 2, 4, 4, 4)  # convs per block
_CHANNELS = (64, 128, 256, 512, 512)
# torchvision's ImageNet statistics, for inputs in [0, 1]
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def vgg19_layers() -> tuple[list[nn.Module], dict[str, int]]:
    """torchvision's VGG19 `features` sequence (37 modules), and each named layer's index in it.

    Names: convB_I and reluB_I (block B, conv I), poolB. conv1_1 is 0, conv5_4 is 34.
    """
    layers: list[nn.Module] = []
    names: dict[str, int] = {}
    prev = 3
    for b, (n, c) in enumerate(zip(_BLOCKS, _CHANNELS), start=1):
        for i in range(1, n + 1):
            names[f"conv{b}_{i}"] = len(layers)
            layers.append(nn.Conv2d(prev, c, 3, 1, 1))
            names[f"relu{b}_{i}"] = len(layers)
            layers.append(nn.ReLU(inplace=False))  # in-place would clobber captured pre-activations
            prev = c
        names[f"pool{b}"] = len(layers)
        layers.append(nn.MaxPool2d(2, 2))
    return layers, names


def _hub_cache_file() -> Path:
    home = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch")
    return home / "hub" / "checkpoints" / VGG19_FILE


def vgg19_weights_file(path: str | os.PathLike[str] | None) -> Path:
    """The VGG19 checkpoint to read: `path`, or without one torch hub's cache file
    ($TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth, TORCH_HOME defaulting to ~/.cache/torch).
    Nothing is downloaded: a missing file is a FileNotFoundError that says where to get it."""
    if path is None:
        cached = _hub_cache_file()
        if not cached.is_file():
            raise FileNotFoundError(
                f"VGG19 weights not found (looked for {cached}); download {VGG19_URL} "
                "and pass vgg_weights: PATH (losses.perceptual.vgg_weights in the config)"
            )
        path = cached
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: no such VGG19 weights file (torchvision's is {VGG19_URL}); fix vgg_weights: PATH"
        )
    return Path(path)


def load_vgg19_weights(path: str | os.PathLike[str] | None) -> dict[str, Tensor]:
    """Read torchvision's VGG19 checkpoint (tensors only: `weights_only=True`; or safetensors),
    found by `vgg19_weights_file`."""
    path = vgg19_weights_file(path)
    from esrforge.modelio.files import read_raw  # tensors only; a wrong or code-carrying file is named

    sd, _ = read_raw(path)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not a state dict (got {type(sd).__name__})")
    return sd


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the requested layers' outputs for [0, 1] RGB inputs.

    `state_dict` must hold every torchvision `features.*` key with its shape (strict check, so a
    VGG16 or vgg19_bn file is refused rather than half-loaded). Only the layers up to the deepest
    requested one are kept and run.
    """

    def __init__(self, layers: list[str], state_dict: dict[str, Tensor]) -> None:
        super().__init__()
        with torch.device("meta"):  # shapes only: every weight is overwritten by the file's
            seq, names = vgg19_layers()
        if not layers:
            raise ValueError("VGG19Features needs at least one layer")
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
        _check_keys(nn.Sequential(*seq).state_dict(), state_dict)
        self.wanted = {names[name]: name for name in layers}
        # nothing past the deepest layer
        self.features = nn.Sequential(*seq[: max(self.wanted) + 1]).to_empty(device="cpu")
        own = self.features.state_dict()
        self.features.load_state_dict({k: state_dict[f"features.{k}"].float() for k in own})
        # Not persistent: the module's state dict stays exactly torchvision's `features.*` layout.
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # always eval: a fixed feature extractor, whatever its owner does

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.wanted:
                out[self.wanted[i]] = x
        return out


def _check_keys(reference: dict[str, Tensor], given: dict[str, Tensor]) -> None:
    """Strict check of the `features.*` keys and shapes; other keys (classifier.*) are ignored."""
    want = {f"features.{k}": v.shape for k, v in reference.items()}
    got = {k: v for k, v in given.items() if k.startswith("features.")}
    missing = sorted(set(want) - set(got), key=_key_order)
    unexpected = sorted(set(got) - set(want), key=_key_order)
    common = sorted(want.keys() & got.keys(), key=_key_order)
    bad = [f"{k} {tuple(got[k].shape)} (expected {tuple(want[k])})" for k in common if got[k].shape != want[k]]
    found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad))
    problems = [f"{what} {_few(keys)}" for what, keys in found if keys]
    if problems:
        raise ValueError(f"not torchvision's VGG19 weights: {'; '.join(problems)}")


def _few(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _key_order(key: str) -> tuple[int, str]:
    parts = key.split(".")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1, key)


class PerceptualLoss(nn.Module):
    """weight * sum_l w_l * criterion(VGG_l(sr), VGG_l(hr)), inputs RGB in [0, 1].

    `layers` maps layer names (conv1_1 ... conv5_4, relu1_1 ... relu5_4) to weights. With
    `pre_activation` (ESRGAN: conv5_4 before ReLU) a `convX_Y` name is the conv output before its
    ReLU; without it the same name is taken after the ReLU. `state_dict` supplies the VGG19
    weights directly (tests); otherwise they come from `load_vgg19_weights(vgg_weights)`.

    Under a mixed-precision autocast, VGG19 still runs in fp32 unless `autocast=True`: SR and HR
    features differ by little near convergence, and rounding both to fp16/bf16 swamps that
    difference (the loss's gradient strayed by 14% in fp16 and 38% in bf16 from fp32's, measured
    on random-weight VGG19 with SR = HR + 3% noise).
    """

    def __init__(
        self,
        layers: dict[str, float],
        *,
        weight: float = 1.0,
        criterion: str = "l1",
        vgg_weights: str | None = None,
        pre_activation: bool = True,
        state_dict: dict[str, Tensor] | None = None,
        autocast: bool = False,
    ) -> None:
        super().__init__()
        if criterion not in ("l1", "mse"):
            raise ValueError(f"perceptual criterion must be l1 or mse, got {criterion!r}")
        # after-activation: convX_Y names its ReLU's output
        post = not pre_activation
        self.layer_weights = {("relu" + n[4:] if post and n.startswith("conv") else n): w for n, w in layers.items()}
        self.weight, self.criterion, self.autocast = weight, criterion, autocast
        sd = state_dict if state_dict is not None else load_vgg19_weights(vgg_weights)
        self.vgg = VGG19Features(list(self.layer_weights), sd)

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        if not self.autocast and torch.is_autocast_enabled(sr.device.type):
            with torch.autocast(sr.device.type, enabled=False):
                return self.forward(sr.float(), hr.float())
        f_sr = self.vgg(sr)
        with torch.no_grad():  # the target needs no graph
            f_hr = self.vgg(hr.detach())
        loss = sr.new_zeros(())
        for name, w in self.layer_weights.items():
            d = f_sr[name] - f_hr[name]
            loss = loss + w * (d.abs().mean() if self.criterion == "l1" else (d * d).mean())
        return self.weight * loss
