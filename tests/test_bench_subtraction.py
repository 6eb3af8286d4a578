"""`hybrid bench subtraction` on one small crowded pair: every registered subtractor is measured,
a registered peer that is not installed is reported with its reason rather than failing, and the
report, JSON and figure are written; the goals come from conf/bench/subtraction.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from hybrid.bench import subtraction as bench
from hybrid.exposure import Difference, Exposure
from hybrid.subtraction import SUBTRACTORS, Subtractor, subtractor_names


class NoPeer(Subtractor):
    """A peer whose package is missing."""

    requires = ("hybrid_no_such_peer_module",)
    peer_of = "alard_lupton"

    def subtract(self, science: Exposure, reference: Exposure) -> Difference:
        raise AssertionError("a peer that is not installed must not run")


@pytest.fixture
def only_a_missing_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry with our subtractors and one peer that is not installed (the real peers, which
    may be installed here, are left out to keep the test fast)."""
    ours = {n: SUBTRACTORS.get(n) for n in subtractor_names()}
    monkeypatch.setattr(SUBTRACTORS, "_entries", {**ours, "nopeer": NoPeer})
    NoPeer.name = "nopeer"


def test_bench_subtraction_writes_its_report(
    small_cfg: DictConfig, tmp_path: Path, only_a_missing_peer
) -> None:
    scenario = bench.Scenario(size=384, density="crowded", seeing_ratio=0.8, seed=0)
    md = bench.run(small_cfg, out_dir=tmp_path, scenarios=[scenario], repeats=1, peers=True)
    assert md == tmp_path / "bench_subtraction.md"
    result = json.loads((tmp_path / "bench_subtraction.json").read_text())
    methods = [row["method"] for row in result["pairs"]]
    variants = list(bench.settings().variants)
    assert methods == [*subtractor_names(), *variants]  # the registry, then the settings' variants
    for row in result["pairs"]:
        assert row["status"] == "ok", row
        assert row["wall_s"] > 0 and row["n_stars"] > 0
        assert row["pull_rms"] > 0 and row["false_positives"] >= 0
    text = md.read_text()
    assert "| alard_lupton |" in text and "## Goals" in text
    assert (tmp_path / "subtraction_residuals.png").stat().st_size > 10_000
    why = 'hybrid_no_such_peer_module is not installed (`pip install -e ".[peers]"`)'
    assert result["peers"] == {"nopeer": why}
    assert f"nopeer: {why}" in text
    assert f"- alard_lupton vs nopeer: **not measured**, {why}." in text
    assert result["goals"]["comparisons"] == [["alard_lupton", "nopeer"]]
    assert result["goals"]["speedup_min"] == bench.settings().goals.speedup_min


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


def test_goals_compare_with_the_registered_peer_on_shared_pairs() -> None:
    """Our method against the registered peer of the same algorithm on the pairs both ran: a pair the
    peer did not run is left out, and each goal is judged on the numbers and the settings' goals."""
    rows = [
        _row("alard_lupton", "a", 1.0, 1.0, 3),
        _row("alard_lupton", "b", 1.0, 1.0, 3),
        _row("alard_lupton", "big", 50.0, 9.0, 90),  # not run by the peer: must not count
        _row("ois", "a", 3.0, 2.0, 2),
        _row("ois", "b", 3.0, 2.0, 2),
    ]
    peer_status = {"ois": None, "properimage": "properimage is not installed", "sfft": None}
    conf = bench.settings()
    lines = bench._goal_lines(bench.summarise(rows), rows, conf, peer_status)
    text = "\n".join(lines)
    line = next(x for x in lines if x.startswith("- alard_lupton vs ois (2 pairs)"))
    assert "3.0x faster (met)" in line
    assert "star pull rms 1.00 vs 2.00 (met)" in line
    assert "false positives per frame 3.0 vs 2.0 (**not met**)" in line
    assert "PyZOGY: not on PyPI" in text
    assert "- zogy vs properimage: zogy did not run." in text
    assert "- alard_lupton: PSF flux +0.40% (met), aperture flux -2.00% (**not met**)." in text
    # the goals are the settings', not the code's
    strict = OmegaConf.merge(conf, {"goals": {"speedup_min": 4.0, "flux_bias_max": 0.05}})
    text = "\n".join(bench._goal_lines(bench.summarise(rows), rows, strict, peer_status))
    assert "3.0x faster (**not met**)" in text
    assert "aperture flux -2.00% (met)" in text


def test_the_settings_come_from_conf_and_can_be_overridden_on_the_command_line() -> None:
    from hybrid.config import load_config

    assert bench.settings(load_config([])) == OmegaConf.load(bench.SETTINGS)
    composed = load_config(["+bench=subtraction", "bench.goals.speedup_min=3"])
    assert bench.settings(composed).goals.speedup_min == 3
