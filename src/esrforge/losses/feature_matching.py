"""Discriminator feature matching (pix2pixHD): L1 between the discriminator's hidden activations
on the HR image and on the generator's output.

A perceptual loss that needs no pretrained network: the discriminator being trained is the
feature extractor. The features are the outputs of every convolution of the discriminator except
its logit heads (the one-channel convs), so the same rule covers the VGG-style, PatchGAN,
multi-scale PatchGAN and U-Net discriminators without knowing their layouts.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


@contextmanager
def discriminator_features(net_d: nn.Module, *, enabled: bool = True) -> Iterator[list[Tensor]]:
    """Collect the hidden conv outputs of every forward pass of `net_d` inside the block, in order.

    enabled=False installs no hooks and yields an empty list, so a training step without feature
    matching neither pays for the hooks nor keeps the discriminator's activations alive.
    """
    feats: list[Tensor] = []
    hooks = [
        # A copy: the discriminators' in-place LeakyReLUs would otherwise turn some of the kept
        # tensors into activations (those whose conv is not followed by a norm layer).
        m.register_forward_hook(lambda _m, _inp, out: feats.append(out.clone()))
        for m in net_d.modules()
        if enabled and isinstance(m, nn.Conv2d) and m.out_channels > 1
    ]
    try:
        yield feats
    finally:
        for h in hooks:
            h.remove()


class FeatureMatchingLoss(nn.Module):
    """weight * mean over layers of mean |fake - real|; the real features are treated as constants."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, fake: list[Tensor], real: list[Tensor]) -> Tensor:
        if not fake or len(fake) != len(real):
            raise ValueError(f"feature matching needs the same layers for both images, got {len(fake)} and {len(real)}")
        per_layer = [torch.mean(torch.abs(f.float() - r.detach().float())) for f, r in zip(fake, real)]
        return self.weight * torch.stack(per_layer).mean()
