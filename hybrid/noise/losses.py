"""Real-bogus losses, robust to label noise; selected by the ``loss`` config group.

Contract: ``loss(logits, target, pos_weight) -> per-sample loss`` with ``logits`` (N,) the real-bogus
head's logits, ``target`` (N,) the labels in {0, 1} (floats) and ``pos_weight`` the class weight of
real samples (a scalar tensor, ``n_bogus / n_real`` under balanced class weighting). The training
module takes the mean; co-teaching ranks the per-sample values. ``p = sigmoid(logit)`` is the
predicted probability of real, and ``p_y`` that of the given label.

* ``bce`` -- binary cross-entropy, ``-[w t log p + (1 - t) log(1 - p)]`` with ``w = pos_weight``
  (the default; identical to ``torch.nn.functional.binary_cross_entropy_with_logits``);
* ``label_smoothing`` -- BCE against ``t (1 - eps) + eps / 2`` (Szegedy et al. 2016; as a noise
  remedy: Lukasik et al. 2020);
* ``bootstrap`` -- BCE against ``beta t + (1 - beta) q`` with the model's own prediction ``q``: ``q = p``
  (soft, gradient through both factors) or ``q = [p > 0.5]`` (hard) (Reed et al. 2014, arXiv:1412.6596);
* ``gce`` -- generalized cross-entropy ``(1 - p_y^q) / q``, between CE (q -> 0) and MAE (q = 1)
  (Zhang & Sabuncu 2018, NeurIPS);
* ``sce`` -- symmetric cross-entropy ``alpha CE + beta RCE``, where the reverse CE with log 0 clipped
  to ``A`` is ``-A (1 - p_y)`` (Wang et al. 2019, ICCV).

The losses without soft targets (gce, sce) weight each sample by ``pos_weight`` when its label is real,
which equals BCE's ``pos_weight`` for hard labels.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hybrid.registry import Registry


class RealBogusLoss(nn.Module):
    """Per-sample real-bogus loss (see the module docstring for the contract)."""

    name: str

    def forward(self, logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


LOSSES: Registry[RealBogusLoss] = Registry("real-bogus loss", "hybrid.noise", contract=RealBogusLoss)


def soft_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """``-[w t log p + (1 - t) log(1 - p)]``, stable in the logits; differentiable in ``target``."""
    return -(pos_weight * target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))


def class_weight(target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """``pos_weight`` for real labels, 1 for bogus."""
    return 1 + (pos_weight - 1) * target


def log_p_label(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``log p_y``: log-probability the model gives the (hard) label."""
    return F.logsigmoid(torch.where(target > 0.5, logits, -logits))


@LOSSES.register("bce")
class BCELoss(RealBogusLoss):
    """Binary cross-entropy with ``pos_weight`` (the default)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")


@LOSSES.register("label_smoothing")
class LabelSmoothingLoss(RealBogusLoss):
    """BCE against targets smoothed towards 1/2 by ``epsilon`` (0 is BCE)."""

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"loss.epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
        return soft_bce(logits, target * (1 - self.epsilon) + self.epsilon / 2, pos_weight)


@LOSSES.register("bootstrap")
class BootstrapLoss(RealBogusLoss):
    """Bootstrapping (Reed et al. 2014): the target mixes the label and the model's own prediction.

    Args:
        beta: weight of the given label (the paper: 0.95 soft, 0.8 hard).
        mode: ``soft`` (the predicted probability, with its gradient: an entropy regulariser) or
            ``hard`` (the predicted class, no gradient).
    """

    def __init__(self, beta: float = 0.95, mode: str = "soft") -> None:
        super().__init__()
        if mode not in ("soft", "hard"):
            raise ValueError(f"loss.mode must be soft or hard, got {mode!r}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"loss.beta must be in [0, 1], got {beta}")
        self.beta, self.mode = float(beta), mode

    def forward(self, logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        q = p if self.mode == "soft" else (p > 0.5).to(p.dtype)
        return soft_bce(logits, self.beta * target + (1 - self.beta) * q, pos_weight)


@LOSSES.register("gce")
class GeneralizedCrossEntropy(RealBogusLoss):
    """Generalized cross-entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018); the paper uses q = 0.7."""

    def __init__(self, q: float = 0.7) -> None:
        super().__init__()
        if not 0.0 < q <= 1.0:
            raise ValueError(f"loss.q must be in (0, 1], got {q}")
        self.q = float(q)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
        p_y_q = torch.exp(self.q * log_p_label(logits, target))
        return class_weight(target, pos_weight) * (1 - p_y_q) / self.q


@LOSSES.register("sce")
class SymmetricCrossEntropy(RealBogusLoss):
    """Symmetric cross-entropy ``alpha CE + beta RCE`` (Wang et al. 2019; CIFAR-10: alpha 0.1, beta 1,
    A = -4)."""

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0) -> None:
        super().__init__()
        if log_zero >= 0:
            raise ValueError(f"loss.log_zero (A) must be negative, got {log_zero}")
        self.alpha, self.beta, self.log_zero = float(alpha), float(beta), float(log_zero)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
        log_p_y = log_p_label(logits, target)
        rce = -self.log_zero * (1 - torch.exp(log_p_y))
        return class_weight(target, pos_weight) * (self.alpha * -log_p_y + self.beta * rce)
