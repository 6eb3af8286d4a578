"""`hybrid bench subtraction` on one small crowded pair: every registered subtractor is measured,
missing peers are reported rather than failing, and the report, JSON and figure are written."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from hybrid.bench import subtraction as bench
from hybrid.subtraction import SUBTRACTORS


def test_bench_subtraction_writes_its_report(small_cfg: DictConfig, tmp_path: Path, monkeypatch) -> None:
    # peers are optional: one that is not installed is listed as such (the real peers, which may be
    # installed here, are left out to keep the test fast)
    monkeypatch.setattr(bench, "PEERS", {"nopeer": ("hybrid_no_such_peer_module", None)})
    scenario = bench.Scenario(size=384, density="crowded", seeing_ratio=0.8, seed=0)
    md = bench.run(small_cfg, out_dir=tmp_path, scenarios=[scenario], repeats=1, peers=True)
    assert md == tmp_path / "bench_subtraction.md"
    result = json.loads((tmp_path / "bench_subtraction.json").read_text())
    methods = {row["method"] for row in result["pairs"]}
    assert set(SUBTRACTORS.names()) <= methods
    assert "zogy[psf=estimate,flux_ratio=fit,astrometric_sigma=estimate]" in methods
    for row in result["pairs"]:
        assert row["status"] == "ok", row
        assert row["wall_s"] > 0 and row["n_stars"] > 0
        assert row["pull_rms"] > 0 and row["false_positives"] >= 0
    text = md.read_text()
    assert "| alard_lupton |" in text and "## Goals" in text
    assert (tmp_path / "subtraction_residuals.png").stat().st_size > 10_000
    assert result["peers"] == {"nopeer": False}
    assert "nopeer: not installed" in text
