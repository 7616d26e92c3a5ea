"""GAN losses: vanilla (BCE with logits), LSGAN, hinge, each optionally relativistic average.

Relativistic average (ESRGAN's RaGAN), in the symmetric form of BasicSR's
`ESRGANModel.optimize_parameters` (basicsr/models/esrgan_model.py):
  D_Ra(x_r, x_f) = C(x_r) - E[C(x_f)],   D_Ra(x_f, x_r) = C(x_f) - E[C(x_r)]
  generator:      (crit(D_Ra(x_r, x_f), fake) + crit(D_Ra(x_f, x_r), real)) / 2, real logits detached
  discriminator:  (crit(D_Ra(x_r, x_f), real) + crit(D_Ra(x_f, x_r), fake)) / 2, and in each half the
                  other side's mean is detached (BasicSR backpropagates the halves separately).
`crit(logits, real|fake)` is the discriminator criterion of `kind`: BCE to 1/0, MSE to 1/0, or
hinge relu(1 - x) / relu(1 + x). For relativistic hinge this is the RaHinge loss; BasicSR would
use -mean(x) for both generator halves, which sums to a constant and gives no gradient.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

Logits = Tensor | Sequence[Tensor]  # a sequence for multi-scale discriminators: one map per scale


class GANLoss(nn.Module):
    """`weight` scales the generator's loss only; the discriminator's is unweighted (BasicSR)."""

    def __init__(self, kind: str = "vanilla", *, relativistic: bool = False, weight: float = 1.0) -> None:
        super().__init__()
        if kind not in ("vanilla", "lsgan", "hinge"):
            raise ValueError(f"GAN loss must be vanilla, lsgan or hinge, got {kind!r}")
        self.kind, self.relativistic, self.weight = kind, relativistic, weight

    def _crit(self, logits: Tensor, real: bool) -> Tensor:
        """The discriminator criterion: how far `logits` are from saying real (or fake)."""
        logits = logits.float()  # fp16 logits from autocast: squares and sums overflow otherwise
        if self.kind == "vanilla":
            target = logits.new_ones(()) if real else logits.new_zeros(())
            return F.binary_cross_entropy_with_logits(logits, target.expand_as(logits))
        if self.kind == "lsgan":
            return ((logits - (1.0 if real else 0.0)) ** 2).mean()
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()

    def _g_one(self, r: Tensor, f: Tensor) -> Tensor:
        r = r.detach()
        if self.relativistic:
            return (self._crit(r - f.mean(), real=False) + self._crit(f - r.mean(), real=True)) / 2
        if self.kind == "hinge":
            return -f.float().mean()  # hinge generator: just raise the fake logits
        return self._crit(f, real=True)

    def _d_one(self, r: Tensor, f: Tensor) -> Tensor:
        if self.relativistic:
            return (self._crit(r - f.detach().mean(), real=True) + self._crit(f - r.detach().mean(), real=False)) / 2
        return self._crit(r, real=True) + self._crit(f, real=False)

    def generator_loss(self, real_logits: Logits | None, fake_logits: Logits) -> Tensor:
        """real_logits: D(HR) (detached here), fake_logits: D(SR) with gradients to the generator.
        Only the relativistic form needs D(HR); otherwise real_logits may be None (a D forward saved)."""
        if real_logits is None:
            if self.relativistic:
                raise ValueError("the relativistic generator loss needs the discriminator's logits for HR")
            real_logits = fake_logits  # unused by the plain forms
        pairs = _pairs(real_logits, fake_logits)
        return self.weight * sum(self._g_one(r, f) for r, f in pairs) / len(pairs)

    def discriminator_loss(self, real_logits: Logits, fake_logits: Logits) -> Tensor:
        """real_logits: D(HR), fake_logits: D(SR.detach()), both with gradients into D."""
        pairs = _pairs(real_logits, fake_logits)
        return sum(self._d_one(r, f) for r, f in pairs) / len(pairs)


def _pairs(real: Logits, fake: Logits) -> list[tuple[Tensor, Tensor]]:
    """(real, fake) per scale; a single tensor is one scale."""
    if isinstance(real, Tensor) and isinstance(fake, Tensor):
        return [(real, fake)]
    if isinstance(real, Tensor) or isinstance(fake, Tensor) or len(real) != len(fake) or not len(real):
        raise ValueError("real and fake logits must both be tensors or equally long, non-empty lists of tensors")
    return list(zip(real, fake))
