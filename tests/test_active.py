"""hybrid.active: acquisition functions, the citizen-science labeller, and the pool loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from hybrid.active import ACQUISITIONS, CitizenScienceLabeller, Oracle, PoolSettings, run_pool, select
from hybrid.training.train import build_model, make_datamodule, normalize_splits
from hybrid.uncertainty import Predictive


def test_every_acquisition_honours_the_contract() -> None:
    rng = np.random.default_rng(0)
    pred = Predictive.from_binary(rng.random((6, 50)))
    for name in ACQUISITIONS:
        acq = ACQUISITIONS.get(name)()
        s = acq.score(pred, rng)
        assert s.shape == (50,) and np.isfinite(s).all(), name
    assert set(ACQUISITIONS.names()) >= {"random", "entropy", "margin", "bald"}


def test_uncertainty_sampling_prefers_the_undecided() -> None:
    rng = np.random.default_rng(1)
    p = np.array([0.02, 0.5, 0.9, 0.45, 0.99])
    pred = Predictive.from_binary(p[None])
    for name in ("entropy", "margin"):
        top = select(ACQUISITIONS.get(name)().score(pred, rng), 2, rng)
        assert set(top) == {1, 3}, name


def test_bald_prefers_disagreement_and_is_flat_for_a_deterministic_model() -> None:
    rng = np.random.default_rng(2)
    bald = ACQUISITIONS.get("bald")()
    agree = np.full((5, 4), 0.5)  # maximal entropy, but all members agree: no epistemic uncertainty
    disagree = np.array([[0.05, 0.95]] * 3 + [[0.95, 0.05]] * 2).reshape(5, 2)
    pred = Predictive.from_binary(np.concatenate([agree, disagree], axis=1))
    assert set(select(bald.score(pred, rng), 2, rng)) == {4, 5}
    deterministic = Predictive.from_binary(rng.random((1, 200)))
    assert np.allclose(bald.score(deterministic, rng), 0.0)
    # ties are broken at random, not by pool order
    picks = select(bald.score(deterministic, rng), 20, rng)
    assert picks.max() > 100


def test_citizen_science_votes_are_noisy_where_candidates_are_faint() -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    table = pd.DataFrame(
        {"truth_real": rng.random(n) < 0.5, "snr_psf": np.where(rng.random(n) < 0.5, 3.0, 100.0)}
    )
    crowd = CitizenScienceLabeller(votes=5, skill_mean=0.8, seed=0)
    labels = crowd.label(table, rng)
    wrong = labels != table["truth_real"].to_numpy(float)
    faint = table["snr_psf"].to_numpy() < 10
    assert wrong[faint].mean() > 2 * wrong[~faint].mean()
    # five votes beat one
    single = CitizenScienceLabeller(votes=1, skill_mean=0.8, seed=0).label(table, rng)
    assert wrong.mean() < (single != table["truth_real"].to_numpy(float)).mean()
    assert np.array_equal(Oracle().label(table, rng), table["truth_real"].to_numpy(float))
    with pytest.raises(ValueError, match="odd"):
        CitizenScienceLabeller(votes=4)


def test_pool_loop_spends_its_budget(tiny_run: Path, tmp_path: Path) -> None:
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    dm = make_datamodule(cfg, Path(json.loads((tiny_run / "metrics.json").read_text())["dataset"]))
    normalize_splits(dm, build_model(cfg, dm))
    pool = dm.splits["train"]
    settings = PoolSettings(initial=30, batch=20, rounds=2, steps=3, mc_samples=4)
    crowd = CitizenScienceLabeller(seed=1)
    curve = run_pool(cfg, dm, "bald", settings=settings, seed=0, labeller=crowd, work_dir=tmp_path)
    assert list(curve["labels"]) == [30, 50, 70]
    assert curve["auc"].between(0, 1).all() and (curve["label_error_rate"] < 0.5).all()
    assert dm.splits["train"] is pool  # the pool is restored
