"""Predictive distributions from stochastic forward passes, and their uncertainty decomposition.

A stochastic predictor (MC dropout, a deep ensemble; see :mod:`hybrid.uncertainty.sampling`) gives S
probability vectors per candidate. Their mean is the predictive distribution; its entropy is the total
uncertainty, which splits into the expected entropy of the members (aleatoric) and the mutual
information between the prediction and the model parameters (epistemic; the BALD score of Houlsby
et al. 2011, arXiv:1112.5745, used for deep active learning by Gal, Islam & Ghahramani 2017, ICML;
decomposition as in Depeweg et al. 2018, ICML). Entropies are in nats.

The decomposition is written once, in torch (:func:`decompose`), so that exported models compute it
in their graph; :class:`Predictive` is its NumPy face. It does not run models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_EPS = 1e-12


def entropy(p: torch.Tensor | np.ndarray, axis: int = -1) -> torch.Tensor | np.ndarray:
    """Shannon entropy (nats) of probability vectors along ``axis``."""
    if isinstance(p, np.ndarray):
        return entropy(torch.from_numpy(p.astype(np.float64)), axis).numpy()
    p = p.clamp(_EPS, 1.0)
    return -(p * torch.log(p)).sum(dim=axis)


def decompose(samples: torch.Tensor) -> dict[str, torch.Tensor]:
    """Predictive mean (N, K), std (N, K), entropy, expected entropy and mutual information (N,) of
    member probabilities (S, N, K)."""
    mean = samples.mean(dim=0)
    total = entropy(mean)
    expected = entropy(samples).mean(dim=0)
    # H[mean] >= mean H by concavity; clip the float round-off below zero
    mi = (total - expected).clamp_min(0.0)
    std = samples.std(dim=0, unbiased=False)
    return {"mean": mean, "std": std, "entropy": total, "expected_entropy": expected, "mutual_info": mi}


def binary_as_categorical(p: np.ndarray) -> np.ndarray:
    """Positive-class probabilities (...) -> two-class vectors (..., 2): (negative, positive)."""
    p = np.asarray(p, float)
    return np.stack([1.0 - p, p], axis=-1)


@dataclass
class Predictive:
    """Per-candidate predictive summary of S stochastic probability vectors.

    Attributes:
        samples: (S, N, K) member probabilities.
        mean: (N, K) predictive distribution (the mean over members).
        entropy: (N,) total uncertainty, H[mean] (nats).
        expected_entropy: (N,) aleatoric part, mean over members of H[member] (nats).
        mutual_info: (N,) epistemic part, ``entropy - expected_entropy`` (BALD; nats, >= 0).
        std: (N, K) standard deviation of the member probabilities.
    """

    samples: np.ndarray
    mean: np.ndarray
    entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_info: np.ndarray
    std: np.ndarray

    @classmethod
    def from_samples(cls, samples: np.ndarray) -> Predictive:
        """From member probabilities (S, N, K) that sum to one along K."""
        samples = np.asarray(samples, float)
        if samples.ndim != 3:
            raise ValueError(f"samples must be (S, N, K), got shape {samples.shape}")
        d = {k: v.numpy() for k, v in decompose(torch.from_numpy(samples)).items()}
        return cls(samples, d["mean"], d["entropy"], d["expected_entropy"], d["mutual_info"], d["std"])

    @classmethod
    def from_binary(cls, samples: np.ndarray) -> Predictive:
        """From member probabilities of the positive class (S, N)."""
        return cls.from_samples(binary_as_categorical(samples))

    @property
    def n_members(self) -> int:
        return self.samples.shape[0]

    def margin(self) -> np.ndarray:
        """(N,) gap between the two most probable classes of the predictive distribution (Scheffer,
        Decomain & Wrobel 2001); small means uncertain."""
        top2 = np.sort(self.mean, axis=-1)[:, -2:]
        return top2[:, 1] - top2[:, 0]

    def positive(self) -> np.ndarray:
        """(N,) predictive probability of the last class (``real`` for a binary predictive)."""
        return self.mean[:, -1]

    def positive_std(self) -> np.ndarray:
        """(N,) standard deviation over members of the probability of the last class."""
        return self.std[:, -1]
