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
    assert "zogy[psf=estimate]" in methods
    for row in result["pairs"]:
        assert row["status"] == "ok", row
        assert row["wall_s"] > 0 and row["n_stars"] > 0
        assert row["pull_rms"] > 0 and row["false_positives"] >= 0
    text = md.read_text()
    assert "| alard_lupton |" in text and "## Goals" in text
    assert (tmp_path / "subtraction_residuals.png").stat().st_size > 10_000
    assert result["peers"] == {"nopeer": False}
    assert "nopeer: not installed" in text
    assert "**not measured**, ois is not installed" in text


def _row(method: str, scenario: str, wall: float, pull: float, fp: int) -> dict:
    return {
        "scenario": scenario,
        "size": 1024,
        "method": method,
        "status": "ok",
        "wall_s": wall,
        "pull_rms": pull,
        "residual_frac_median": 0.01 * pull,
        "false_positives": fp,
        "false_positives_score": float("nan"),
        "flux_ratio_median": 1.004,
        "aperture_flux_ratio_median": 0.98,
        "completeness": [[float(lo), float(lo + 1), 1, 1] for lo in bench.MAG_BINS[:-1]],
    }


def test_goals_compare_with_the_peer_on_shared_pairs() -> None:
    """Our method against its peer on the pairs both ran: a pair the peer did not run is left out,
    and each goal is judged on the numbers, not assumed."""
    ois = "ois (Bramich, 11x11)"
    rows = [
        _row("alard_lupton", "a", 1.0, 1.0, 3),
        _row("alard_lupton", "b", 1.0, 1.0, 3),
        _row("alard_lupton", "big", 50.0, 9.0, 90),  # not run by the peer: must not count
        _row(ois, "a", 3.0, 2.0, 2),
        _row(ois, "b", 3.0, 2.0, 2),
    ]
    peers = {ois: True, "properimage (ZOGY)": False, "sfft (customized, numpy)": False}
    lines = bench._goal_lines(bench.summarise(rows), rows, peers)
    text = "\n".join(lines)
    line = next(x for x in lines if x.startswith(f"- alard_lupton vs {ois} (2 pairs)"))
    assert "3.0x faster (met)" in line
    assert "star pull rms 1.00 vs 2.00 (met)" in line
    assert "false positives per frame 3.0 vs 2.0 (**not met**)" in line
    assert "PyZOGY: not on PyPI" in text
    assert "zogy did not run" in text
    assert "- alard_lupton: PSF flux +0.40% (met), aperture flux -2.00% (**not met**)." in text
