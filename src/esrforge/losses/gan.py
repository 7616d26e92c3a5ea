"""GAN losses: vanilla (BCE), LSGAN, hinge, each optionally in relativistic average form.

Relativistic average (ESRGAN's RaGAN, as BasicSR's ESRGAN model computes it): the critic's
logits are compared with the mean logit of the other side,
  D_Ra(x_r, x_f) = C(x_r) - E[C(x_f)],  D_Ra(x_f, x_r) = C(x_f) - E[C(x_r)].
Generator: (crit(D_Ra(x_r, x_f), fake) + crit(D_Ra(x_f, x_r), real)) / 2, with the real logits
detached. Discriminator: (crit(D_Ra(x_r, x_f), real) + crit(D_Ra(x_f, x_r), fake)) / 2, where
each half sees the other side's mean detached.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

Logits = Tensor | list[Tensor]


class GANLoss(nn.Module):
    """`weight` scales the generator's loss only; the discriminator's is unweighted."""

    def __init__(self, kind: str = "vanilla", *, relativistic: bool = False, weight: float = 1.0) -> None:
        super().__init__()
        if kind not in ("vanilla", "lsgan", "hinge"):
            raise ValueError(f"GAN loss must be vanilla, lsgan or hinge, got {kind!r}")
        self.kind, self.relativistic, self.weight = kind, relativistic, weight

    def _crit(self, logits: Tensor, target_real: bool, for_d: bool = True) -> Tensor:
        if self.kind == "vanilla":
            target = logits.new_ones(()) if target_real else logits.new_zeros(())
            return F.binary_cross_entropy_with_logits(logits, target.expand_as(logits))
        if self.kind == "lsgan":
            return ((logits - (1.0 if target_real else 0.0)) ** 2).mean()
        if not for_d:  # hinge generator loss (non-relativistic): raise the fake logits
            return -logits.mean() if target_real else logits.mean()
        return F.relu(1.0 - logits).mean() if target_real else F.relu(1.0 + logits).mean()

    @staticmethod
    def _scales(real: Logits, fake: Logits) -> list[tuple[Tensor, Tensor]]:
        if isinstance(real, list):
            return list(zip(real, fake))
        return [(real, fake)]

    def generator_loss(self, real: Logits, fake: Logits) -> Tensor:
        """real: D(HR) logits (detached by the caller), fake: D(SR) logits with gradients."""
        total = 0
        pairs = self._scales(real, fake)
        for r, f in pairs:
            r = r.detach()
            if self.relativistic:
                loss = (self._crit(r - f.mean(), False) + self._crit(f - r.mean(), True)) / 2
            else:
                loss = self._crit(f, True, for_d=False)
            total = total + loss
        return self.weight * total / len(pairs)

    def discriminator_loss(self, real: Logits, fake: Logits) -> Tensor:
        """real: D(HR) logits, fake: D(SR.detach()) logits; both with gradients into D."""
        total = 0
        pairs = self._scales(real, fake)
        for r, f in pairs:
            if self.relativistic:
                loss = (self._crit(r - f.detach().mean(), True) + self._crit(f - r.detach().mean(), False)) / 2
            else:
                loss = self._crit(r, True) + self._crit(f, False)
            total = total + loss
        return total / len(pairs)
