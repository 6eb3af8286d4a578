"""hybrid.monitoring: each drift test fires on a shifted sample and stays quiet on unshifted ones at
its nominal rate; multiple-testing corrections; stream replay; the report and `hybrid drift`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hybrid.cli import main
from hybrid.monitoring import (
    DRIFT_TESTS,
    MonitorSample,
    adjust_p_values,
    build_tests,
    drift_report,
    replay,
    summarize,
)

ALPHA = 0.05
NAMES = ["snr_psf", "fwhm", "sharpness", "elongation", "n_neg", "ctx_offset_arcsec"]


def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> MonitorSample:
    """Scores, 6 features (one discrete, one with gaps) and 8-d embeddings; ``shift`` moves one
    feature, the scores and the embeddings by ``shift`` standard deviations. The features carry
    names of detection features, so that tables of them are read as features."""
    f = rng.standard_normal((n, 6))
    f[:, 0] += shift
    f[:, 4] = rng.poisson(3, n)
    f[rng.random(n) < 0.2, 5] = np.nan
    e = rng.standard_normal((n, 8))
    e[:, :2] += shift
    scores = 1 / (1 + np.exp(-(rng.standard_normal(n) * 2 - 1 + shift)))
    return MonitorSample(scores, pd.DataFrame(f, columns=NAMES), e)


def false_alarm_rate(name: str, draws: int, n: int, **kwargs: object) -> float:
    rng = np.random.default_rng(1)
    alarms = 0
    for i in range(draws):
        test = DRIFT_TESTS.get(name)(alpha=ALPHA, seed=i, **kwargs).fit(draw(rng, n))
        alarms += test.test(draw(rng, n)).drifted
    return alarms / draws


@pytest.mark.parametrize(
    ("name", "draws", "n", "kwargs"),
    [
        ("psi", 200, 400, {}),
        ("ks", 200, 300, {}),
        ("mmd", 100, 100, {"n_permutations": 100}),
        ("classifier", 40, 150, {}),
    ],
)
def test_quiet_on_unshifted_samples_at_the_nominal_rate(name: str, draws: int, n: int, kwargs: dict) -> None:
    rate = false_alarm_rate(name, draws, n, **kwargs)
    # the binomial upper 99.9% bound of the alarm count at rate ALPHA
    bound = stats.binom.ppf(0.999, draws, ALPHA) / draws
    assert rate <= bound, f"{name}: false-alarm rate {rate:.3f} above {bound:.3f} (nominal {ALPHA})"


@pytest.mark.parametrize("name", ["psi", "ks", "mmd", "classifier"])
def test_fires_on_a_shifted_sample(name: str) -> None:
    rng = np.random.default_rng(2)
    test = DRIFT_TESTS.get(name)(alpha=ALPHA).fit(draw(rng, 400))
    result = test.test(draw(rng, 400, shift=0.6))
    assert result.drifted and result.p_value < 0.01, result


def draw_exposures(
    rng: np.random.Generator, n_groups: int, per_group: int, shift: float = 0.0
) -> MonitorSample:
    """Candidates of ``n_groups`` exposures: each exposure has its own seeing (a feature shared by its
    candidates) that also moves the other features and the embeddings, as in a real stream."""
    g = np.repeat(np.arange(n_groups), per_group)
    seeing = rng.normal(0, 1, n_groups)[g] + shift
    n = len(g)
    f = np.c_[seeing, rng.standard_normal((n, 3)) + 0.7 * seeing[:, None]]
    e = rng.standard_normal((n, 4)) + 0.7 * seeing[:, None]
    names = ["fwhm", "snr_psf", "sharpness", "elongation"]
    return MonitorSample(None, pd.DataFrame(f, columns=names), e, groups=np.array([f"e{k}" for k in g]))


@pytest.mark.parametrize(("name", "draws"), [("ks", 40), ("mmd", 40), ("classifier", 30)])
def test_exposure_groups_keep_the_nominal_rate_where_candidates_are_not_independent(
    name: str, draws: int
) -> None:
    rng = np.random.default_rng(8)
    alarms = {True: 0, False: 0}
    for i in range(draws):
        ref, cur = draw_exposures(rng, 40, 15), draw_exposures(rng, 20, 15)
        for grouped in (True, False):
            r, c = (s if grouped else MonitorSample(s.scores, s.features, s.embeddings) for s in (ref, cur))
            kwargs = {} if name == "classifier" else {"n_permutations": 100}
            test = DRIFT_TESTS.get(name)(alpha=ALPHA, seed=i, **kwargs)
            alarms[grouped] += test.fit(r).test(c).drifted
    bound = stats.binom.ppf(0.999, draws, ALPHA)
    assert alarms[True] <= bound, f"{name} with exposure groups: {alarms[True]} / {draws} false alarms"
    assert alarms[False] > 3 * bound, f"{name} taking candidates as independent should false-alarm here"
    # and with groups it still sees a shift of the exposures' seeing
    test = DRIFT_TESTS.get(name)(alpha=ALPHA)
    assert test.fit(draw_exposures(rng, 40, 15)).test(draw_exposures(rng, 40, 15, shift=3.0)).drifted


def test_psi_matches_the_textbook_formula() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.random(10_000), rng.random(5000) ** 2
    test = DRIFT_TESTS.get("psi")(bins=10).fit(MonitorSample(scores=ref))
    result = test.test(MonitorSample(scores=cur))
    edges = np.quantile(ref, np.linspace(0, 1, 11))
    r = np.histogram(ref, edges)[0] / len(ref)
    c = np.histogram(np.clip(cur, edges[0], edges[-1]), edges)[0] / len(cur)
    assert result.statistic == pytest.approx(((c - r) * np.log(c / r)).sum(), rel=1e-3)
    s = result.statistic
    assert result.details["band"] == ("stable" if s < 0.1 else "moderate" if s < 0.25 else "major")


def test_ks_names_the_feature_that_moved() -> None:
    rng = np.random.default_rng(4)
    result = DRIFT_TESTS.get("ks")().fit(draw(rng, 500)).test(draw(rng, 500, shift=0.5))
    assert next(iter(result.details["top_features"])) == "snr_psf"
    assert result.details["n_drifted_features"] >= 1 and result.details["n_features"] == 6


def test_multiple_testing_corrections() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    assert np.allclose(adjust_p_values(p, "bonferroni"), np.minimum(p * 5, 1))
    # Holm: sorted 0.005*5, 0.01*4, 0.03*3, 0.04*2, 0.5*1, made monotone
    assert np.allclose(adjust_p_values(p, "holm"), [0.04, 0.09, 0.09, 0.025, 0.5])
    assert np.allclose(adjust_p_values(p, "bh"), stats.false_discovery_control(p))
    with pytest.raises(ValueError, match="correction"):
        adjust_p_values(p, "sidak")


def test_replay_reports_delay_and_false_alarms() -> None:
    rng = np.random.default_rng(5)
    reference = draw(rng, 600)
    before, after = draw(rng, 1000), draw(rng, 600, shift=0.8)
    stream = MonitorSample.concat([before, after])
    assert len(stream) == 1600 and stream.features.index[-1] == 1599
    tests = build_tests(["psi", "ks", "mmd"], alpha=0.01)
    windows = replay(tests, reference, stream, window=200, change_at=1000, progress=False)
    assert len(windows) == 3 * 8
    summary = summarize(windows, change_at=1000).set_index("test")
    assert (summary["windows_before_change"] == 5).all()
    assert summary["false_alarms"].sum() <= 2
    assert summary["detected"].all() and (summary["detection_delay"] <= 400).all()


def test_report_skips_tests_without_their_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    ref, cur = draw(rng, 300), draw(rng, 300, shift=1.0)
    report = drift_report(MonitorSample(features=ref.features), MonitorSample(features=cur.features))
    assert {r["test"] for r in report["results"]} == {"ks", "classifier"}
    assert set(report["skipped"]) == {"psi", "mmd"} and report["drifted"]


def test_hybrid_drift_on_candidate_tables(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(7)
    for name, shift in (("ref", 0.0), ("cur", 1.0)):
        s = draw(rng, 400, shift)
        s.features.assign(score=s.scores, mjd=np.arange(400.0)).to_parquet(tmp_path / f"{name}.parquet")
    assert (
        main(
            [
                "drift",
                str(tmp_path / "ref.parquet"),
                str(tmp_path / "cur.parquet"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| psi |" in printed and "DRIFT" in printed and "skipped" in printed  # no embeddings: mmd skipped
    saved = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert saved["drifted"] and {r["test"] for r in saved["results"]} == {"psi", "ks", "classifier"}
    assert (tmp_path / "out" / "drift.md").read_text().startswith("reference: 400")
    # scores alone (the output of `hybrid predict`): PSI only
    for name in ("ref", "cur"):
        pd.read_parquet(tmp_path / f"{name}.parquet")[["score"]].to_parquet(
            tmp_path / f"{name}_scores.parquet"
        )
    scores_only = [str(tmp_path / f"{name}_scores.parquet") for name in ("ref", "cur")]
    assert main(["drift", *scores_only, "--out", str(tmp_path / "scores")]) == 0
    saved = json.loads((tmp_path / "scores" / "drift.json").read_text())
    assert [r["test"] for r in saved["results"]] == ["psi"] and set(saved["skipped"]) == {
        "ks",
        "mmd",
        "classifier",
    }


def test_hybrid_drift_scores_and_embeds_datasets_with_a_run_model(tiny_run: Path, tmp_path: Path) -> None:
    dataset = json.loads((tiny_run / "metrics.json").read_text())["dataset"]
    args = ["drift", dataset, dataset, "--model", str(tiny_run), "--reference-split", "train"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "drift.json").read_text())
    assert {r["test"] for r in saved["results"]} == {"psi", "ks", "mmd", "classifier"}
    assert all(np.isfinite(r["statistic"]) and 0 <= r["p_value"] <= 1 for r in saved["results"])
    assert saved["n_current"] > saved["n_reference"] > 0
