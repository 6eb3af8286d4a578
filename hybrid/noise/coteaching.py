"""Co-teaching (Han et al. 2018, NeurIPS, arXiv:1804.06872): two networks teach each other.

Each network ranks the mini-batch by its own per-sample loss and keeps the ``R(T)`` fraction with the
smallest losses; each network is then updated on the samples its *peer* kept. Networks memorise
clean labels before noisy ones, so small-loss samples are mostly clean, and the two networks'
different errors keep one from confirming its own mistakes. The kept fraction follows the paper's
schedule ``R(T) = 1 - min(T / T_k, 1) * tau`` over epochs T, with ``tau`` the forget rate (set it to
the expected noise rate) and ``T_k`` the epochs over which it ramps up.

Real-bogus sets are imbalanced (about a quarter real), and flips concentrate in the smaller class: 20%
symmetric flips make about 40% of the "real" labels wrong but under 10% of the "bogus" ones. Ranking the
whole batch then drops clean minority samples along with the flips. With ``per_class`` (the default) each
labelled class is ranked on its own and keeps ``1 - min(T / T_k, 1) * tau_c``, with ``tau_c`` that class's
own noise rate -- class-conditional small-loss selection, a deviation from the paper for imbalanced data.

The two networks are trained by one optimiser on the sum of their losses, which equals two
optimisers with the same settings (AdamW is per parameter). Evaluation, checkpoint selection and
export use the first network (``module.model``); the peer is saved in the checkpoint too.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from hybrid.models import HybridModel
from hybrid.training.module import HybridModule


def kept_fraction(epoch: int, *, forget_rate: float, forget_epochs: int) -> float:
    """``R(T) = 1 - min(T / T_k, 1) * tau`` (Han et al. 2018, Algorithm 1) for epoch ``T`` from 0."""
    ramp = min(epoch / forget_epochs, 1.0) if forget_epochs > 0 else 1.0
    return 1.0 - ramp * forget_rate


def resolve_forget_rate(
    forget_rate: float | str, table: pd.DataFrame, *, per_class: bool = False
) -> float | tuple[float, float]:
    """``forget_rate``, or with ``auto`` the true noise rate of the training labels (the fraction whose
    ``label_real`` differs from ``truth_real``), which Han et al. (2018) assume known; at most 0.5.

    With ``per_class``: the pair (tau of the rows labelled bogus, tau of the rows labelled real), from
    each labelled class's own wrong fraction (``auto``) or the one given rate for both.
    """
    if forget_rate != "auto":
        return (float(forget_rate),) * 2 if per_class else float(forget_rate)
    label = table["label_real"].to_numpy(bool)
    wrong = label != table["truth_real"].to_numpy(bool)

    def rate(rows: np.ndarray) -> float:
        return float(min(wrong[rows].mean(), 0.5)) if rows.any() else 0.0

    everything = np.ones(len(label), bool)
    return (rate(~label), rate(label)) if per_class else rate(everything)


class CoTeachingModule(HybridModule):
    """A :class:`HybridModule` whose ``model`` is trained together with a ``peer`` by co-teaching.

    Args:
        model, peer: two HybridModels of the same configuration, initialised differently.
        forget_rate: tau, the fraction of each batch finally dropped as likely mislabelled; a pair
            (tau of the rows labelled bogus, tau of those labelled real) ranks each labelled class on
            its own (class-conditional selection).
        forget_epochs: T_k, epochs over which the dropped fraction ramps from 0 to tau.
        **kwargs: as :class:`HybridModule` (the per-sample ``rb_loss`` ranks the samples).
    """

    def __init__(
        self,
        model: HybridModel,
        peer: HybridModel,
        *,
        forget_rate: float | tuple[float, float],
        forget_epochs: int = 10,
        **kwargs,
    ) -> None:
        rates = tuple(forget_rate) if isinstance(forget_rate, tuple | list) else (forget_rate,)
        if not all(0.0 <= r < 1.0 for r in rates):
            raise ValueError(f"coteaching.forget_rate must be in [0, 1), got {forget_rate}")
        super().__init__(model, **kwargs)
        self.peer = peer
        if self.channels_last:
            self.peer.to(memory_format=torch.channels_last)
        self.forget_rates, self.forget_epochs = tuple(float(r) for r in rates), int(forget_epochs)

    def kept(self) -> list[float]:
        """The kept fraction R(T) now: one, or (rows labelled bogus, rows labelled real)."""
        return [
            kept_fraction(self.current_epoch, forget_rate=r, forget_epochs=self.forget_epochs)
            for r in self.forget_rates
        ]

    def small_loss(self, losses: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Indices of the small-loss samples: the kept fraction of the batch, or of each labelled class."""
        kept = self.kept()
        groups = [torch.arange(len(losses), device=losses.device)]
        if len(kept) == 2:
            groups = [torch.nonzero(label == c).squeeze(1) for c in (0, 1)]
        chosen = [
            g[torch.argsort(losses[g])[: math.ceil(k * len(g))]] for g, k in zip(groups, kept, strict=True)
        ]
        return torch.cat(chosen)

    def _head_losses(
        self, rb: torch.Tensor, ty: torch.Tensor, batch: dict[str, torch.Tensor], index: torch.Tensor
    ) -> torch.Tensor:
        l_rb = self.rb_loss(rb[index], batch["label_real"][index], self.pos_weight).mean()
        l_ty = nn.functional.cross_entropy(ty[index], batch["label_type"][index], weight=self.type_weights)
        return self.rb_weight * l_rb + self.type_weight * l_ty

    def loss(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if not train:
            return super().loss(batch, train)
        inputs = self._inputs(batch, train)
        rb1, ty1 = self.model(*inputs, stamps_normalized=True)
        rb2, ty2 = self.peer(*inputs, stamps_normalized=True)
        label = batch["label_real"]
        with torch.no_grad():  # rank by the real-bogus loss: that is where the label noise is
            # ranked by the unweighted loss: the class weight would push every real sample to the
            # large-loss end and starve the minority class
            unit = torch.ones_like(self.pos_weight)
            small1 = self.small_loss(self.rb_loss(rb1, label, unit), label)
            small2 = self.small_loss(self.rb_loss(rb2, label, unit), label)
        loss = self._head_losses(rb1, ty1, batch, small2) + self._head_losses(rb2, ty2, batch, small1)
        return loss, rb1

    def on_train_epoch_end(self) -> None:
        names = (
            ["kept_fraction"]
            if len(self.forget_rates) == 1
            else ["kept_fraction_bogus", "kept_fraction_real"]
        )
        for name, kept in zip(names, self.kept(), strict=True):
            self.log(f"train/{name}", kept)
