"""Discriminators: VGG-style (ESRGAN), PatchGAN, multi-scale PatchGAN, U-Net with spectral norm."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm as sn


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2, inplace=True)


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's discriminator, with BasicSR's key names (conv0_0 ... bn4_1, linear1, linear2).

    Five stages of (3x3 conv, 4x4 stride-2 conv) with BatchNorm; an adaptive average pool to 4x4
    before the linear layers lets it take any input of 32 px or more. At 128 px (what BasicSR's
    configs use) the pool is the identity, so BasicSR weights compute exactly what they did.
    """

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64) -> None:
        super().__init__()
        chans = [num_feat, num_feat * 2, num_feat * 4, num_feat * 8, num_feat * 8]
        prev = in_ch
        for i, c in enumerate(chans):
            self.add_module(f"conv{i}_0", nn.Conv2d(prev, c, 3, 1, 1, bias=i == 0))
            if i > 0:
                self.add_module(f"bn{i}_0", nn.BatchNorm2d(c, affine=True))
            self.add_module(f"conv{i}_1", nn.Conv2d(c, c, 4, 2, 1, bias=False))
            self.add_module(f"bn{i}_1", nn.BatchNorm2d(c, affine=True))
            prev = c
        self.linear1 = nn.Linear(chans[-1] * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"VGG-style discriminator needs inputs of at least 32 px, got {tuple(x.shape[-2:])}")
        for i in range(5):
            x = getattr(self, f"conv{i}_0")(x)
            x = _lrelu(getattr(self, f"bn{i}_0")(x) if i > 0 else x)
            x = _lrelu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(x)))
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.linear2(_lrelu(self.linear1(x)))


class PatchGANDiscriminator(nn.Module):
    """pix2pix's N-layer PatchGAN: a map of logits, one per overlapping patch.

    Normalisation: BatchNorm, or spectral norm on every conv (and no BatchNorm) when requested.
    """

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64, n_layers: int = 3, spectral_norm: bool = False) -> None:
        super().__init__()
        wrap = sn if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [wrap(nn.Conv2d(in_ch, num_feat, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers.append(wrap(nn.Conv2d(num_feat * prev, num_feat * mult, 4, stride, 1, bias=spectral_norm)))
            if not spectral_norm:
                layers.append(nn.BatchNorm2d(num_feat * mult))
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(wrap(nn.Conv2d(num_feat * mult, 1, 4, 1, 1)))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class MultiScalePatchGAN(nn.Module):
    """num_D PatchGANs, each on the input downsampled by 2 once more; returns a list of maps."""

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64, n_layers: int = 3, num_D: int = 3, spectral_norm: bool = False) -> None:
        super().__init__()
        self.discs = nn.ModuleList(
            PatchGANDiscriminator(in_ch=in_ch, num_feat=num_feat, n_layers=n_layers, spectral_norm=spectral_norm) for _ in range(num_D)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, d in enumerate(self.discs):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(d(x))
        return outs


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral norm: per-pixel logits at input size.

    Key names conv0 ... conv9 as Real-ESRGAN's files. Inputs must be multiples of 8 px.
    """

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        nf = num_feat
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_ch, nf, 3, 1, 1)
        self.conv1 = sn(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = sn(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = sn(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
        self.conv4 = sn(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = sn(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = sn(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
        self.conv7 = sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"U-Net discriminator needs sizes that are multiples of 8, got {tuple(x.shape[-2:])}")
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)  # noqa: E731
        x0 = _lrelu(self.conv0(x))
        x1 = _lrelu(self.conv1(x0))
        x2 = _lrelu(self.conv2(x1))
        x3 = _lrelu(self.conv3(x2))
        x4 = _lrelu(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = _lrelu(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = _lrelu(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        return self.conv9(_lrelu(self.conv8(_lrelu(self.conv7(x6)))))


DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "vgg": VGGStyleDiscriminator,
    "patchgan": PatchGANDiscriminator,
    "multiscale_patchgan": MultiScalePatchGAN,
    "unet": UNetDiscriminatorSN,
}


def build_discriminator(arch: str, **hparams: object) -> nn.Module:
    if arch not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {arch!r}; allowed: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[arch](**hparams)
