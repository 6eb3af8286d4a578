"""The pool-based active-learning simulation: start small, query a batch, retrain, repeat.

The training split of a dataset is the unlabelled pool and its test split the yardstick. A random
``initial`` set is labelled first; each round trains a fresh model on the labelled set for a fixed
number of optimiser steps (so that rounds differ only in what was labelled, not in how long they
trained), scores it on the test split against the truth, and asks the acquisition function for the
next ``batch`` candidates, which the labeller labels. Only real-bogus is learned (``type_weight`` 0):
volunteers vet real against bogus, not the transient type. Feature statistics come from the whole
pool, which is unlabelled but available.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from sklearn.metrics import roc_auc_score

from hybrid.active.acquisition import ACQUISITIONS, select
from hybrid.active.labeller import Labeller, Oracle
from hybrid.evaluation.metrics import rate_at
from hybrid.taxonomy import TRANSIENT_TYPES
from hybrid.training.data import CandidateDataModule, SplitTensors
from hybrid.training.train import build_model, fit, score_split
from hybrid.uncertainty.sampling import Ensemble, MCDropout, sample_split

log = logging.getLogger(__name__)


@dataclass
class PoolSettings:
    """Budget of one simulation.

    Attributes:
        initial: labels drawn at random before the first round.
        batch: labels acquired per round.
        rounds: acquisition rounds (the curve has ``rounds + 1`` points).
        steps: optimiser steps per training (epochs = steps / batches per epoch, at least 1).
        mc_samples: MC-dropout samples for stochastic acquisitions (BALD).
    """

    initial: int = 100
    batch: int = 100
    rounds: int = 6
    steps: int = 200
    mc_samples: int = 10


def _with_labels(split: SplitTensors, rows: np.ndarray, labels: np.ndarray) -> SplitTensors:
    """The pool rows ``rows`` with real-bogus labels ``labels`` (types follow: bogus where 0)."""
    sub = split.subset(rows)
    sub.label_real = torch.as_tensor(labels, dtype=torch.float32)
    bogus = TRANSIENT_TYPES.index("bogus")
    sub.label_type = torch.where(sub.label_real > 0.5, sub.label_type, torch.full_like(sub.label_type, bogus))
    return sub


def run_pool(
    cfg: DictConfig,
    dm: CandidateDataModule,
    strategy: str,
    *,
    settings: PoolSettings,
    seed: int,
    labeller: Labeller | None = None,
    work_dir: str | Path,
) -> pd.DataFrame:
    """The learning curve of one strategy and seed: one row per round with the labels spent, the
    test AUC and FNR at 1% FPR (against the truth), and the labels' error rate so far.

    ``dm``'s stamps must be normalised (:func:`hybrid.training.train.normalize_splits`); its training
    split is the pool and is restored at the end.
    """
    acquisition = ACQUISITIONS.get(strategy)()
    labeller = labeller or Oracle()
    rng = np.random.default_rng([seed, 0xA11])
    pool, test = dm.splits["train"], dm.splits["test"]
    y_test = test.table["truth_real"].to_numpy(bool)
    cfg = cfg.copy()
    cfg.seed = seed
    cfg.train.type_weight = 0.0
    labelled = rng.permutation(len(pool))[: settings.initial]
    labels = labeller.label(pool.table.iloc[labelled], rng)
    rows = []
    try:
        for r in range(settings.rounds + 1):
            sub = _with_labels(pool, labelled, labels)
            dm.use_train(sub)
            L.seed_everything(seed * 1000 + r, workers=True, verbose=False)
            model = build_model(cfg, dm)
            if model.features is not None:
                model.features.fit(pool.features.numpy())
            per_epoch = math.ceil(len(sub) / dm.batch_size)
            fit(
                cfg,
                dm,
                model,
                Path(work_dir),
                validate=False,
                max_epochs=max(1, math.ceil(settings.steps / per_epoch)),
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            score = score_split(model, test, rotation_average=False)["score"].to_numpy()
            truth = pool.table["truth_real"].to_numpy(float)[labelled]
            rows.append(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "round": r,
                    "labels": len(labelled),
                    "auc": float(roc_auc_score(y_test, score)),
                    "fnr_at_1pct_fpr": rate_at(y_test, score, fpr=0.01),
                    "label_error_rate": float((labels != truth).mean()),
                    "real_fraction_labelled": float(truth.mean()),
                }
            )
            log.info(
                "%s seed %d round %d: %d labels, AUC %.4f", strategy, seed, r, len(labelled), rows[-1]["auc"]
            )
            if r == settings.rounds:
                break
            rest = np.setdiff1d(np.arange(len(pool)), labelled)
            sampler = (
                MCDropout(model, settings.mc_samples, seed=seed)
                if acquisition.stochastic
                else Ensemble([model])
            )
            pred = sample_split(sampler, pool.subset(rest)).real_bogus()
            new = rest[select(acquisition.score(pred, rng), settings.batch, rng)]
            labelled = np.concatenate([labelled, new])
            labels = np.concatenate([labels, labeller.label(pool.table.iloc[new], rng)])
    finally:
        dm.use_train(pool)
    return pd.DataFrame(rows)
