"""Discriminators: VGG-style (ESRGAN), PatchGAN, multi-scale PatchGAN, U-Net with spectral norm.

Key names follow the files these networks are published as (BasicSR's VGGStyleDiscriminator,
Real-ESRGAN's UNetDiscriminatorSN, pix2pix's `model.N`), so pretrained discriminators load.
Spectral norm is the classic `torch.nn.utils.spectral_norm` hook, not the parametrization API:
only the hook gives the `weight_orig` / `weight_u` / `weight_v` keys that Real-ESRGAN's files use.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm as _sn


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2, inplace=True)


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _identity(m: nn.Module) -> nn.Module:
    return m


class VGGStyleDiscriminator(nn.Module):
    """ESRGAN's discriminator, with BasicSR's key names (conv0_0 ... bn4_1, linear1, linear2).

    Stages of (3x3 conv, 4x4 stride-2 conv), BatchNorm on all but the first conv, LeakyReLU 0.2;
    channels nf, 2nf, 4nf, 8nf, 8nf; then linear 100 and linear 1. BasicSR takes 128 px inputs
    with five stages and 256 px with a sixth (conv5_0 ... bn5_1, 8nf); `input_size` (the
    training crop) picks the same: five below 256, six from 256. An adaptive average pool to 4x4
    before the linear layers then takes any input of 32 px or more. At 128 and 256 px the
    stride-2 stages already leave 4x4, so the pool is the identity and BasicSR's weights load
    (strict) and compute exactly what they did there.
    """

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        chans = [num_feat, num_feat * 2, num_feat * 4, num_feat * 8, num_feat * 8] + ([num_feat * 8] if input_size >= 256 else [])
        self.stages = len(chans)
        prev = in_ch
        for i, c in enumerate(chans):
            # Only conv0_0 has a bias: every other conv is followed by BatchNorm (BasicSR layout).
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
        for i in range(self.stages):
            x = getattr(self, f"conv{i}_0")(x)
            x = _lrelu(getattr(self, f"bn{i}_0")(x) if i > 0 else x)
            x = _lrelu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(x)))
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.linear2(_lrelu(self.linear1(x)))


class PatchGANDiscriminator(nn.Module):
    """pix2pix's N-layer PatchGAN: a 1-channel map of logits, one per overlapping patch.

    4x4 convs: the first `n_layers` have stride 2, then one stride-1 conv and the stride-1 output
    conv; channels nf * min(2 ** n, 8). Normalisation: BatchNorm after every conv but the first
    and the last; with `spectral_norm` every conv is spectrally normalised instead and there is no
    BatchNorm (the two together fight: BN rescales what SN constrains), so those convs get biases.
    """

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64, n_layers: int = 3, spectral_norm: bool = False) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchGAN needs n_layers >= 1, got {n_layers}")
        wrap: Callable[[nn.Module], nn.Module] = _sn if spectral_norm else _identity
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
    """pix2pixHD-style: num_D PatchGANs, the k-th on the input average-pooled by 2 k times.

    The pool (3x3, stride 2, pad 1, padding excluded from the mean) keeps borders unbiased.
    Returns a list of logit maps, finest scale first; GANLoss averages over the list.
    """

    def __init__(
        self, *, in_ch: int = 3, num_feat: int = 64, n_layers: int = 3, num_D: int = 3, spectral_norm: bool = False
    ) -> None:
        super().__init__()
        if num_D < 1:
            raise ValueError(f"multi-scale PatchGAN needs num_D >= 1, got {num_D}")
        self.discs = nn.ModuleList(
            PatchGANDiscriminator(in_ch=in_ch, num_feat=num_feat, n_layers=n_layers, spectral_norm=spectral_norm)
            for _ in range(num_D)
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

    Key names conv0 ... conv9 as in Real-ESRGAN's files: conv0 plain 3x3; conv1-3 4x4 stride-2
    downsampling; conv4-6 3x3 after bilinear x2 upsampling, with skips from conv2, conv1, conv0;
    conv7-8 3x3; conv9 plain 3x3 to one channel. conv1-8 are spectrally normalised and have no
    bias. Inputs must be multiples of 8 px so that the skips line up.
    """

    def __init__(self, *, in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        nf = num_feat
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_ch, nf, 3, 1, 1)
        self.conv1 = _sn(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = _sn(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = _sn(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
        self.conv4 = _sn(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = _sn(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = _sn(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
        self.conv7 = _sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = _sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"U-Net discriminator needs sizes that are multiples of 8, got {tuple(x.shape[-2:])}")
        x0 = _lrelu(self.conv0(x))
        x1 = _lrelu(self.conv1(x0))
        x2 = _lrelu(self.conv2(x1))
        x3 = _lrelu(self.conv3(x2))
        x4 = _lrelu(self.conv4(_up2(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = _lrelu(self.conv5(_up2(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = _lrelu(self.conv6(_up2(x5)))
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
    """Construct a registered discriminator from keyword hyperparameters."""
    if arch not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {arch!r}; allowed: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[arch](**hparams)
