"""SRVGGNetCompact, Real-ESRGAN's small VGG-style model, and reading its hyperparameters."""

from __future__ import annotations

import math
import re

from torch import Tensor, nn
from torch.nn import functional as F

StateDict = dict[str, Tensor]

ACTIVATIONS = ("prelu", "relu", "leakyrelu")


def _activation(kind: str, num_feat: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {kind!r}")


class SRVGGNetCompact(nn.Module):
    """conv -> act -> (conv -> act) x num_conv -> conv to out_ch * scale^2 -> pixel shuffle,
    plus a nearest-upsampled copy of the input (the network learns the residual)."""

    def __init__(
        self,
        *,
        in_ch: int = 3,
        out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        scale: int = 4,
        activation: str = "prelu",
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.in_ch, self.out_ch, self.num_feat, self.num_conv = in_ch, out_ch, num_feat, num_conv
        self.scale, self.activation = scale, activation
        layers: list[nn.Module] = [nn.Conv2d(in_ch, num_feat, 3, 1, 1), _activation(activation, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(activation, num_feat)]
        layers.append(nn.Conv2d(num_feat, out_ch * scale * scale, 3, 1, 1))
        self.body = nn.Sequential(*layers)

    def hparams(self) -> dict[str, int | str]:
        return {
            "in_ch": self.in_ch,
            "out_ch": self.out_ch,
            "num_feat": self.num_feat,
            "num_conv": self.num_conv,
            "scale": self.scale,
            "activation": self.activation,
        }

    def forward(self, x: Tensor) -> Tensor:
        out = F.pixel_shuffle(self.body(x), self.scale)
        base = x
        if self.in_ch != self.out_ch:
            base = x.mean(dim=1, keepdim=True).expand(-1, self.out_ch, -1, -1)
        if self.scale > 1:
            base = F.interpolate(base, scale_factor=float(self.scale), mode="nearest")
        return out + base


_BODY = re.compile(r"^body\.(\d+)\.(weight|bias)$")


def hparams_from_state_dict(sd: StateDict, activation: str | None = None, *, out_ch: int | None = None) -> dict[str, int | str]:
    """Infer SRVGGNetCompact hyperparameters from shapes.

    Only PReLU leaves weights (`body.<odd>.weight` of shape [num_feat]); a file without them was
    trained with ReLU or LeakyReLU, which weights cannot tell apart, so `activation` (from file
    metadata or the user) decides and ReLU is the fallback. `out_ch` (from metadata) is needed
    only for models whose output channel count differs from the input's.
    """
    convs: dict[int, Tensor] = {}
    prelus: dict[int, Tensor] = {}
    for k, v in sd.items():
        m = _BODY.match(k)
        if not m:
            raise KeyError(f"unexpected key {k} in SRVGGNetCompact layout")
        if m.group(2) == "weight":
            (convs if v.ndim == 4 else prelus)[int(m.group(1))] = v
    if len(convs) < 2:
        raise KeyError("SRVGGNetCompact layout needs at least two convs")
    order = sorted(convs)
    first, last = convs[order[0]], convs[order[-1]]
    in_ch, num_feat = int(first.shape[1]), int(first.shape[0])
    last_out = int(last.shape[0])
    # in_ch == out_ch for every released compact model; the scale is what makes the count square.
    out_ch = out_ch or in_ch
    scale = math.isqrt(last_out // out_ch) if last_out % out_ch == 0 else 0
    if scale < 1 or scale * scale * out_ch != last_out:
        raise KeyError(f"SRVGGNetCompact last conv has {last_out} channels, not out_ch * scale^2 for out_ch={out_ch}")
    if prelus:
        act = "prelu"
    else:
        act = activation if activation in ("relu", "leakyrelu") else "relu"
    return {
        "in_ch": in_ch,
        "out_ch": out_ch,
        "num_feat": num_feat,
        "num_conv": len(convs) - 2,
        "scale": scale,
        "activation": act,
    }
