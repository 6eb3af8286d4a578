"""The malformed-input corpus (tests/reliability_corpus.py): every case ends in its named outcome --
a one-line error naming the file or key, a skip with its reason recorded, or a flagged repair --
never a traceback and never a score without a flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.reliability_corpus import corpus, passes, run_case

CASES = corpus()
ROOT = Path(__file__).resolve().parent.parent


def test_the_corpus_covers_every_entry_point_with_at_least_40_cases() -> None:
    entries = {c.entry for c in CASES}
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    assert entries == {"hybrid predict", "hybrid ingest", "hybrid build", "load_catalog", "read_exposure"}
    assert {c.expect for c in CASES} == {"error", "skip", "flag"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_ends_in_its_named_outcome(case, tiny_bundle: Path, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path, tiny_bundle)
    assert passes(case, outcome), f"{case.name}: expected {case.expect} /{case.match}/, got {outcome}"


def test_clean_alerts_carry_clean_flags(tiny_bundle: Path) -> None:
    from hybrid.data.readers import read_alerts
    from hybrid.serving import Predictor
    from hybrid.serving.predictor import FLAG_COLUMNS
    from tests.test_readers import PARQUET

    predictor = Predictor(tiny_bundle, workers=1)
    batch = read_alerts(PARQUET, stamp_size=predictor.stamp_size)
    scores = predictor.score(batch)
    assert set(FLAG_COLUMNS) <= set(scores.columns)
    assert (scores["flag_stamp_padding"] == 0).all() and (scores["flag_repaired"] == "").all()
    assert not scores["flag_duplicate_id"].any()
    nan = np.isnan(batch.stamps).mean(axis=(-2, -1)).max(axis=1)
    np.testing.assert_allclose(scores["flag_nan_fraction"], nan)
    assert (nan > 0).sum() == 2  # the fixture's two alerts with NaN pixels, and only those


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            ["run.py", "task=build_dataset", "data.n_fields=-3"],
            "data.n_fields=-3: must be a positive integer",
        ),
        (["-m", "hybrid.cli", "predict", "BUNDLE", "EMPTY", "--out", "OUT"], "not a readable Parquet file"),
    ],
    ids=["run.py negative n_fields", "hybrid predict empty parquet"],
)
def test_the_real_command_line_prints_one_line_and_no_traceback(
    command: list[str], message: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty.parquet").write_bytes(b"")
    subs = {
        "BUNDLE": str(tiny_bundle),
        "EMPTY": str(tmp_path / "empty.parquet"),
        "OUT": str(tmp_path / "s.pq"),
    }
    argv = [sys.executable, *(subs.get(a, a) for a in command), f"hydra.run.dir={tmp_path}"]
    if "hybrid.cli" in command:
        argv = argv[:-1]
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"}
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
