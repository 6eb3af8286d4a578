"""Acquisition functions of pool-based active learning: which unlabelled candidates to label next.

Each is registered in :data:`ACQUISITIONS` with one contract, ``score(predictive, rng) -> (N,)``,
higher meaning "label me first"; :func:`select` takes the top of a pool.

* ``random``: uniform sampling, the baseline every study must beat;
* ``entropy``: maximum entropy of the predictive distribution (Shannon 1948; uncertainty sampling,
  Lewis & Gale 1994);
* ``margin``: smallest gap between the two most probable classes (Scheffer, Decomain & Wrobel 2001);
* ``bald``: the mutual information between the label and the model parameters, from MC dropout or an
  ensemble (Houlsby et al. 2011, arXiv:1112.5745; Gal, Islam & Ghahramani 2017, ICML). It is zero
  for a deterministic model, so it needs a stochastic predictor.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hybrid.registry import Registry
from hybrid.uncertainty.predictive import Predictive


class Acquisition:
    """Contract: ``score(pred, rng) -> (N,)``; ``stochastic`` says whether it needs several samples."""

    name: ClassVar[str]
    stochastic: ClassVar[bool] = False

    def score(self, pred: Predictive, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


ACQUISITIONS: Registry[Acquisition] = Registry("acquisition function", "hybrid.active", contract=Acquisition)


@ACQUISITIONS.register("random")
class RandomAcquisition(Acquisition):
    """Uniformly random candidates: the baseline every strategy is measured against."""

    def score(self, pred: Predictive, rng: np.random.Generator) -> np.ndarray:
        return rng.random(pred.mean.shape[0])


@ACQUISITIONS.register("entropy")
class EntropyAcquisition(Acquisition):
    """Highest predictive entropy first (uncertainty sampling; Settles 2009, Active Learning
    Literature Survey)."""

    def score(self, pred: Predictive, rng: np.random.Generator) -> np.ndarray:
        return pred.entropy


@ACQUISITIONS.register("margin")
class MarginAcquisition(Acquisition):
    """Smallest margin between the two most probable classes first (Scheffer et al. 2001, IDA)."""

    def score(self, pred: Predictive, rng: np.random.Generator) -> np.ndarray:
        return -pred.margin()


@ACQUISITIONS.register("bald")
class BALDAcquisition(Acquisition):
    """Highest mutual information between prediction and weights first (BALD; Houlsby et al. 2011,
    arXiv:1112.5745; Gal, Islam & Ghahramani 2017, ICML)."""

    stochastic = True

    def score(self, pred: Predictive, rng: np.random.Generator) -> np.ndarray:
        return pred.mutual_info


def select(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``k`` highest scores, ties broken at random (so that a flat score, e.g. BALD
    of a deterministic model, degrades to random sampling rather than to the pool's order)."""
    scores = np.asarray(scores, float)
    k = min(k, len(scores))
    order = np.lexsort((rng.random(len(scores)), -scores))
    return order[:k]
