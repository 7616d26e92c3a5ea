"""RRDBNet, the ESRGAN generator, and the pure key conversions between its file layouts.

The module always uses BasicSR / Real-ESRGAN key names (`conv_first`, `body.N.rdbK.convJ`,
`conv_body`, `conv_upN`, `conv_hr`, `conv_last`). The original 2018 release layout (`model.N...`)
and xinntao's interim "new arch" layout (`RRDB_trunk`, `trunk_conv`, `upconvN`, `HRconv`) are
converted to it by the functions at the bottom, and back to the original layout for export.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn
from torch.nn import functional as F

StateDict = dict[str, Tensor]

_RESIDUAL_SCALE = 0.2  # ESRGAN's residual scaling in RDB and RRDB


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled and added to the input.

    `plus` (ESRGAN+): a bias-free 1x1 conv of the input is added to x2, and x2 to x4.
    """

    def __init__(self, *, num_feat: int, num_grow_ch: int, plus: bool = False) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(num_feat, num_grow_ch, 1, bias=False) if plus else None
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2, inplace=True)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2, inplace=True)
        if self.conv1x1 is not None:
            x2 = x2 + self.conv1x1(x)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2, inplace=True)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2, inplace=True)
        if self.conv1x1 is not None:
            x4 = x4 + x2
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * _RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual in residual dense block: three RDBs and an outer scaled residual."""

    def __init__(self, *, num_feat: int, num_grow_ch: int, plus: bool = False) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch, plus=plus)
        self.rdb2 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch, plus=plus)
        self.rdb3 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch, plus=plus)

    def forward(self, x: Tensor) -> Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL_SCALE + x


def unshuffle_factor_for(scale: int) -> int:
    """Real-ESRGAN's convention: x1 and x2 models pixel-unshuffle the input and upsample x4."""
    return {1: 4, 2: 2}.get(scale, 1)


class RRDBNet(nn.Module):
    """ESRGAN generator.

    `scale` is the overall factor. The body upsamples by 2 ** `num_upsample` with nearest
    interpolation + conv stages; `unshuffle` (1, 2 or 4) pixel-unshuffles the input first, so
    scale = 2 ** num_upsample / unshuffle. By default x1 and x2 use unshuffle (Real-ESRGAN) and
    x4/x8 use plain upsampling; old community x1/x2 files without unshuffle load with
    `unshuffle=1`. `plus` builds ESRGAN+ blocks (an extra 1x1 conv per RDB).
    """

    def __init__(
        self,
        *,
        in_ch: int = 3,
        out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        scale: int = 4,
        unshuffle: int | None = None,
        plus: bool = False,
    ) -> None:
        super().__init__()
        if unshuffle is None:
            unshuffle = unshuffle_factor_for(scale)
        if unshuffle not in (1, 2, 4):
            raise ValueError(f"unshuffle must be 1, 2 or 4, got {unshuffle}")
        body_scale = scale * unshuffle
        num_upsample = body_scale.bit_length() - 1
        if scale < 1 or 2**num_upsample != body_scale or num_upsample > 3:
            raise ValueError(f"RRDBNet scale must be 1, 2, 4 or 8 (with unshuffle {unshuffle}), got {scale}")
        self.in_ch, self.out_ch, self.scale, self.unshuffle = in_ch, out_ch, scale, unshuffle
        self.num_feat, self.num_block, self.num_grow_ch = num_feat, num_block, num_grow_ch
        self.num_upsample = num_upsample
        self.plus = plus

        self.conv_first = nn.Conv2d(in_ch * unshuffle * unshuffle, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat=num_feat, num_grow_ch=num_grow_ch, plus=plus) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for i in range(1, num_upsample + 1):
            self.add_module(f"conv_up{i}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, out_ch, 3, 1, 1)

    def hparams(self) -> dict[str, int | bool]:
        extra = {"plus": True} if self.plus else {}  # only ESRGAN+ models carry the key
        return extra | {
            "in_ch": self.in_ch,
            "out_ch": self.out_ch,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "num_grow_ch": self.num_grow_ch,
            "scale": self.scale,
            "unshuffle": self.unshuffle,
        }

    def forward(self, x: Tensor) -> Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(1, self.num_upsample + 1):
            up = getattr(self, f"conv_up{i}")
            feat = F.leaky_relu(up(F.interpolate(feat, scale_factor=2.0, mode="nearest")), 0.2, inplace=True)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2, inplace=True))


# ---------------------------------------------------------------------------------------------
# Key layouts. All functions are pure: state_dict in, new state_dict out (tensors shared).

_ORIG_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_ORIG_1X1 = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv1x1\.weight$")
_BASICSR_1X1 = re.compile(r"^body\.(\d+)\.rdb(\d)\.conv1x1\.weight$")
_ORIG_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_ORIG_SEQ = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_NEW_RDB = re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$")
_BASICSR_RDB = re.compile(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)$")


def _fail(msg: str) -> None:
    raise KeyError(msg)


def original_to_basicsr(sd: StateDict) -> StateDict:
    """Original ESRGAN release layout (`model.0`, `model.1.sub.N.RDBk.convj.0`, ...) -> BasicSR.

    The sequential indices after the trunk are: per upsample stage (upsample, conv, act), then HR
    conv, act, last conv; so the last index is 4 + 3 * stages.
    """
    trunk_idx = [int(m.group(1)) for k in sd if (m := _ORIG_TRUNK.match(k))]
    if not trunk_idx:
        _fail("original ESRGAN layout without a trunk conv (model.1.sub.N.weight)")
    nb = max(trunk_idx)
    seq = sorted({int(m.group(1)) for k in sd if (m := _ORIG_SEQ.match(k))})
    last = seq[-1]
    if seq[0] != 0 or (last - 4) % 3 != 0:
        _fail(f"original ESRGAN layout with unexpected top-level indices {seq}")
    stages = (last - 4) // 3
    names = {0: "conv_first", 2 + 3 * stages: "conv_hr", last: "conv_last"}
    names.update({3 + 3 * i: f"conv_up{i + 1}" for i in range(stages)})
    out: StateDict = {}
    for k, v in sd.items():
        if m := _ORIG_RDB.match(k):
            b, r, c, kind = m.groups()
            out[f"body.{b}.rdb{r}.conv{c}.{kind}"] = v
        elif m := _ORIG_1X1.match(k):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv1x1.weight"] = v
        elif m := _ORIG_TRUNK.match(k):
            if int(m.group(1)) != nb:
                _fail(f"unexpected key {k}")
            out[f"conv_body.{m.group(2)}"] = v
        elif m := _ORIG_SEQ.match(k):
            idx = int(m.group(1))
            if idx not in names:
                _fail(f"unexpected key {k} (stages={stages})")
            out[f"{names[idx]}.{m.group(2)}"] = v
        else:
            _fail(f"unexpected key {k} in original ESRGAN layout")
    return out


def basicsr_to_original(sd: StateDict) -> StateDict:
    """BasicSR layout -> original ESRGAN release layout (inverse of `original_to_basicsr`)."""
    nb = 1 + max((int(m.group(1)) for k in sd if (m := _BASICSR_RDB.match(k))), default=-1)
    stages = sum(1 for k in sd if re.match(r"^conv_up\d+\.weight$", k))
    names = {"conv_first": 0, "conv_hr": 2 + 3 * stages, "conv_last": 4 + 3 * stages}
    names.update({f"conv_up{i + 1}": 3 + 3 * i for i in range(stages)})
    out: StateDict = {}
    for k, v in sd.items():
        if m := _BASICSR_RDB.match(k):
            b, r, c, kind = m.groups()
            out[f"model.1.sub.{b}.RDB{r}.conv{c}.0.{kind}"] = v
            continue
        if m := _BASICSR_1X1.match(k):
            out[f"model.1.sub.{m.group(1)}.RDB{m.group(2)}.conv1x1.weight"] = v
            continue
        layer, _, kind = k.rpartition(".")
        if layer == "conv_body":
            out[f"model.1.sub.{nb}.{kind}"] = v
        elif layer in names:
            out[f"model.{names[layer]}.{kind}"] = v
        else:
            _fail(f"unexpected key {k} in BasicSR layout")
    return out


_NEWARCH_NAMES = {"trunk_conv": "conv_body", "HRconv": "conv_hr", "conv_first": "conv_first", "conv_last": "conv_last"}


def newarch_to_basicsr(sd: StateDict) -> StateDict:
    """xinntao's interim layout (`RRDB_trunk`, `trunk_conv`, `upconvN`, `HRconv`) -> BasicSR."""
    out: StateDict = {}
    for k, v in sd.items():
        if m := _NEW_RDB.match(k):
            b, r, c, kind = m.groups()
            out[f"body.{b}.rdb{r}.conv{c}.{kind}"] = v
            continue
        layer, _, kind = k.rpartition(".")
        if m := re.fullmatch(r"upconv(\d)", layer):
            out[f"conv_up{m.group(1)}.{kind}"] = v
        elif layer in _NEWARCH_NAMES:
            out[f"{_NEWARCH_NAMES[layer]}.{kind}"] = v
        else:
            _fail(f"unexpected key {k} in RRDB_trunk layout")
    return out


def hparams_from_basicsr(sd: StateDict, *, in_ch: int | None = None) -> dict[str, int]:
    """Read every RRDBNet hyperparameter from tensor shapes of a BasicSR-layout state dict.

    `in_ch` (from the file's metadata, where esrforge wrote it) settles the pixel-unshuffle
    factor when the model's input and output channel counts differ.
    """
    for key in ("conv_first.weight", "conv_body.weight", "conv_hr.weight", "conv_last.weight", "body.0.rdb1.conv1.weight"):
        if key not in sd:
            _fail(f"RRDBNet state dict lacks {key}")
        if sd[key].ndim != 4:
            _fail(f"{key} has shape {tuple(sd[key].shape)}, not a conv weight's 4 dimensions")
    first = sd["conv_first.weight"]
    num_feat, in_total = int(first.shape[0]), int(first.shape[1])
    out_ch = int(sd["conv_last.weight"].shape[0])
    num_grow_ch = int(sd["body.0.rdb1.conv1.weight"].shape[0])
    blocks = {int(m.group(1)) for k in sd if (m := _BASICSR_RDB.match(k))}
    num_block = len(blocks)
    if blocks != set(range(num_block)):  # the largest index alone could ask for 10^8 blocks
        gap = next(i for i in range(num_block + 1) if i not in blocks)
        _fail(f"RRDB blocks are numbered up to {max(blocks)} but block {gap} is missing")
    num_upsample = sum(1 for k in sd if re.match(r"^conv_up\d+\.weight$", k))
    # Pixel-unshuffled input: conv_first sees in_ch * f^2 channels. Assume in_ch == out_ch, as in
    # every released model (RGB -> RGB, gray -> gray), which is what makes the factor readable.
    unshuffle = 1
    if in_ch is not None and in_total % in_ch == 0 and in_total // in_ch in (1, 4, 16):
        unshuffle = math.isqrt(in_total // in_ch)
    else:
        for f in (2, 4):
            if in_total == out_ch * f * f:
                unshuffle = f
    in_ch = in_total // (unshuffle * unshuffle)
    body_scale = 2**num_upsample
    if body_scale % unshuffle:
        _fail(f"RRDBNet with {num_upsample} upsample stages cannot undo a x{unshuffle} unshuffle")
    plus = {"plus": True} if any(_BASICSR_1X1.match(k) for k in sd) else {}
    return plus | {
        "in_ch": in_ch,
        "out_ch": out_ch,
        "num_feat": num_feat,
        "num_block": num_block,
        "num_grow_ch": num_grow_ch,
        "scale": body_scale // unshuffle,
        "unshuffle": unshuffle,
    }
