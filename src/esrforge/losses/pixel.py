"""Pixel losses: L1, MSE and Charbonnier (a smooth L1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PixelLoss(nn.Module):
    """weight * mean(criterion(sr - hr))."""

    def __init__(self, kind: str = "l1", weight: float = 1.0, eps: float = 1e-12) -> None:
        super().__init__()
        if kind not in ("l1", "mse", "charbonnier"):
            raise ValueError(f"pixel loss must be l1, mse or charbonnier, got {kind!r}")
        self.kind, self.weight, self.eps = kind, weight, eps

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        d = sr - hr
        if self.kind == "l1":
            loss = d.abs().mean()
        elif self.kind == "mse":
            loss = (d * d).mean()
        else:
            loss = torch.sqrt(d * d + self.eps).mean()
        return self.weight * loss
