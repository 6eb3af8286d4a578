"""Kill -9 at seeded random moments, then resume: ``hybrid build`` ends with identical dataset bytes,
``hybrid predict`` with the same scored rows (none missing, none twice), training with identical
weights; two ``hybrid predict`` processes on one output do not corrupt it (tests/reliability_kill.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability_kill import build_trial, concurrent_predict_trial, predict_trial, train_trial

pytestmark = pytest.mark.slow


def _check(trial) -> None:
    assert trial.killed >= 1, f"no kill landed while {trial.entry} ran: {trial}"
    assert trial.identical, trial


def test_build_killed_at_random_points_resumes_to_identical_bytes(tmp_path: Path) -> None:
    _check(build_trial(tmp_path, seed=0))


def test_predict_killed_at_random_points_scores_every_alert_once(tiny_bundle: Path, tmp_path: Path) -> None:
    _check(predict_trial(tmp_path, tiny_bundle, seed=0))


def test_training_killed_at_random_points_ends_with_identical_weights(tmp_path: Path) -> None:
    _check(train_trial(tmp_path, seed=0))


def test_two_predict_processes_on_one_output_do_not_corrupt_it(tiny_bundle: Path, tmp_path: Path) -> None:
    trial = concurrent_predict_trial(tmp_path, tiny_bundle)
    assert trial.identical, trial
