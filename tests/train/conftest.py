"""Training tests' shared workspace: a few tiny photos, a random-weight VGG19 file, a pretrain model."""

import pytest
import torch

from esrforge.images import write_image
from tests.conftest import photo_like, tiny_rrdb

# VGG19 conv layers in torchvision's `features` indices, with their channel counts.
_VGG = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
        (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512), (28, 512, 512),
        (30, 512, 512), (32, 512, 512), (34, 512, 512)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    for i in range(4):
        write_image(root / "hr" / f"{i}.png", photo_like(48, 48, seed=i))
    for i in range(2):
        write_image(root / "val" / f"v{i}.png", photo_like(32, 40, seed=10 + i))
    g = torch.Generator().manual_seed(0)
    vgg = {}
    for idx, cin, cout in _VGG:
        vgg[f"features.{idx}.weight"] = (torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5).half()
        vgg[f"features.{idx}.bias"] = torch.zeros(cout).half()
    torch.save(vgg, root / "vgg19.pth")
    torch.save({"params_ema": tiny_rrdb(4, num_grow_ch=4, num_feat=4, num_block=1).state_dict()}, root / "pre.pth")
    return root
