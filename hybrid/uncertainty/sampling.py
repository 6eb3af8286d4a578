"""Stochastic predictors: MC dropout and deep ensembles, with one output contract.

Both take the inputs of :class:`~hybrid.models.HybridModel` and return S samples of the logits,
``(S, B)`` for real-bogus and ``(S, B, K)`` for type, so that everything downstream (temperature
scaling, predictive summaries, acquisition functions, export wrappers) serves either.

* :class:`MCDropout` is Monte Carlo dropout (Gal & Ghahramani 2016, ICML), as gotorb uses it
  (Killestein et al. 2021, MNRAS 503, 4838): every dropout layer of the trained network stays active at
  test time and S passes sample S thinned networks. Here the S dropout masks are drawn once from a seed
  and frozen (batch norm stays in inference mode), so predictions are reproducible, the same S
  sub-networks score every candidate, and the whole sampler exports to ONNX as one static graph.
* :class:`Ensemble` is a deep ensemble (Lakshminarayanan, Pritzel & Blundell 2017, NeurIPS): members
  trained from different seeds (:func:`hybrid.uncertainty.ensemble.train_ensemble`).

A deterministic model is an :class:`Ensemble` of one member, or an :class:`MCDropout` of a network
without dropout; its samples all agree, so its mutual information (BALD) is zero.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hybrid.models import HybridModel
from hybrid.models.preprocessing import DIHEDRAL, dihedral
from hybrid.training.data import SplitTensors
from hybrid.training.train import split_inputs
from hybrid.uncertainty.predictive import Predictive


class FrozenDropout(nn.Module):
    """Dropout with S masks drawn once: the input holds S blocks of B rows, block s gets mask s.

    Args:
        p: drop probability.
        n_samples: S.
        seed: seeds the masks, drawn at the first call (when the feature shape is known).
    """

    def __init__(self, p: float, n_samples: int, seed: int) -> None:
        super().__init__()
        self.p, self.n_samples, self.seed = float(p), int(n_samples), int(seed)
        self.register_buffer("mask", torch.empty(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return x
        if self.mask.numel() == 0:
            g = torch.Generator().manual_seed(self.seed)
            keep = torch.rand((self.n_samples, *x.shape[1:]), generator=g) >= self.p
            self.mask = (keep.float() / (1.0 - self.p)).to(x.device)
        s = self.n_samples
        return (x.reshape(s, -1, *x.shape[1:]) * self.mask.unsqueeze(1)).reshape(x.shape)


class MCDropout(nn.Module):
    """MC-dropout sampler of a trained :class:`HybridModel` (a deep copy; the original is untouched).

    Every ``nn.Dropout`` of the model becomes a :class:`FrozenDropout` with the layer's own rate; a
    network with no dropout gives S identical samples.

    Args:
        model: the trained model.
        n_samples: S, the number of thinned networks.
        seed: seeds the masks (layer i uses ``seed * 1000 + i``).
    """

    def __init__(self, model: HybridModel, n_samples: int = 20, *, seed: int = 0) -> None:
        super().__init__()
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.model = copy.deepcopy(model).eval()
        self.n_samples = int(n_samples)
        dropouts = [(name, m) for name, m in self.model.named_modules() if isinstance(m, nn.Dropout)]
        for i, (name, m) in enumerate(dropouts):
            parent_name, _, attr = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, attr, FrozenDropout(m.p, n_samples, seed * 1000 + i))
        self.n_dropout_layers = len(dropouts)

    @property
    def image_encoder(self) -> nn.Module | None:
        return self.model.image_encoder

    @property
    def tabular_encoder(self) -> nn.Module | None:
        return self.model.tabular_encoder

    @torch.no_grad()
    def forward(
        self, image: torch.Tensor | None, features: torch.Tensor | None, *, stamps_normalized: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-bogus logits (S, B) and type logits (S, B, K)."""
        s = self.n_samples
        img = None if image is None else image.repeat(s, *([1] * (image.dim() - 1)))
        feat = None if features is None else features.repeat(s, 1)
        rb, ty = self.model(img, feat, stamps_normalized=stamps_normalized)
        return rb.reshape(s, -1), ty.reshape(s, -1, ty.shape[-1])


class Ensemble(nn.Module):
    """Deep-ensemble sampler: the members' logits, stacked.

    Args:
        members: trained models with the same inputs (same features and channels).
    """

    def __init__(self, members: list[HybridModel]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(m.eval() for m in members)
        self.n_samples = len(members)

    @property
    def image_encoder(self) -> nn.Module | None:
        return self.members[0].image_encoder

    @property
    def tabular_encoder(self) -> nn.Module | None:
        return self.members[0].tabular_encoder

    @torch.no_grad()
    def forward(
        self, image: torch.Tensor | None, features: torch.Tensor | None, *, stamps_normalized: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-bogus logits (S, B) and type logits (S, B, K)."""
        out = [m(image, features, stamps_normalized=stamps_normalized) for m in self.members]
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])


Sampler = MCDropout | Ensemble


@dataclass
class Samples:
    """Logits of S samples and V test-time views of N candidates.

    Attributes:
        rb_logits: (S, V, N) real-bogus logits.
        type_logits: (S, V, N, K) type logits.
    """

    rb_logits: np.ndarray
    type_logits: np.ndarray

    def real_bogus(self, temperature: float = 1.0) -> Predictive:
        """Predictive of real-bogus; each sample's probability is averaged over the views."""
        p = 1.0 / (1.0 + np.exp(-self.rb_logits / temperature))
        return Predictive.from_binary(p.mean(axis=1))

    def types(self, temperature: float = 1.0) -> Predictive:
        """Predictive of the transient type."""
        z = self.type_logits / temperature
        z = z - z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        return Predictive.from_samples((p / p.sum(axis=-1, keepdims=True)).mean(axis=1))


@torch.no_grad()
def sample_logits(
    sampler: Sampler,
    image: torch.Tensor | None,
    features: torch.Tensor | None,
    *,
    rotation_average: bool = False,
    stamps_normalized: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (S, V, B) and (S, V, B, K), V = 8 flips and rotations with ``rotation_average``, else 1."""
    views = DIHEDRAL if rotation_average and image is not None else [(0, False)]
    rb, ty = [], []
    for k, flip in views:
        img = dihedral(image, k, flip) if image is not None else None
        r, t = sampler(img, features, stamps_normalized=stamps_normalized)
        rb.append(r)
        ty.append(t)
    return torch.stack(rb, dim=1), torch.stack(ty, dim=1)


@torch.no_grad()
def sample_split(
    sampler: Sampler, split: SplitTensors, *, rotation_average: bool = False, batch_size: int = 256
) -> Samples:
    """Samples of every candidate of a split (stamps normalised, as for
    :func:`hybrid.training.train.score_split`)."""
    rb, ty = [], []
    for image, features in split_inputs(sampler, split, batch_size):
        r, t = sample_logits(
            sampler, image, features, rotation_average=rotation_average, stamps_normalized=True
        )
        rb.append(r.float().cpu())
        ty.append(t.float().cpu())
    return Samples(torch.cat(rb, dim=2).numpy(), torch.cat(ty, dim=2).numpy())
