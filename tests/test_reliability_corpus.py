"""The malformed-input corpus (tests/reliability_corpus.py): every case ends in its named outcome --
a one-line error naming the file or key, a skip with its reason recorded, or a flagged repair --
never a traceback and never a score without a flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability_corpus import corpus, passes, run_case

CASES = corpus()


def test_the_corpus_covers_every_entry_point_with_at_least_40_cases() -> None:
    entries = {c.entry for c in CASES}
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    assert entries == {"hybrid predict", "hybrid ingest", "hybrid build", "load_catalog", "read_exposure"}
    assert {c.expect for c in CASES} == {"error", "skip", "flag"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_ends_in_its_named_outcome(case, tiny_bundle: Path, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path, tiny_bundle)
    assert passes(case, outcome), f"{case.name}: expected {case.expect} /{case.match}/, got {outcome}"
