"""Realism (simulated vs real candidates) and the real-alert weak-label metrics of `hybrid bench real`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.evaluation.metrics import bootstrap_auc
from hybrid.evaluation.realism import (
    STAMP_STATISTICS,
    classifier_two_sample_test,
    compare_columns,
    stamp_statistics,
)

FIXTURE = Path(__file__).parent / "fixtures" / "ztf_alerts" / "alerts.parquet"


def _scores(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.random(n) < 0.3
    return y, y + rng.normal(0, 1.0, n)


def test_bootstrap_auc_interval_holds_the_auc_and_narrows_with_more_candidates() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 2000):
        y, s = _scores(n, rng)
        auc, (lo, hi) = bootstrap_auc(y, s, n_boot=500, seed=0)
        assert lo < auc < hi
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]  # ~ 1 / sqrt(n): 4.5x narrower expected
    y, s = _scores(300, rng)
    assert bootstrap_auc(y, s, n_boot=200, seed=3) == bootstrap_auc(y, s, n_boot=200, seed=3)
    with pytest.raises(ValueError, match="both classes"):
        bootstrap_auc(np.ones(10), np.arange(10.0))


def test_c2st_is_chance_on_one_distribution_and_finds_what_differs() -> None:
    rng = np.random.default_rng(0)
    cols = ["a", "b", "c", "d"]
    same = classifier_two_sample_test(
        pd.DataFrame(rng.normal(size=(400, 4)), columns=cols),
        pd.DataFrame(rng.normal(size=(500, 4)), columns=cols),
        repeats=1,
    )
    assert abs(same.auc - 0.5) < 0.08
    assert same.n_per_side == 400  # balanced: the larger side subsampled
    shifted = rng.normal(size=(400, 4))
    shifted[:, 2] += 4.0
    diff = classifier_two_sample_test(
        pd.DataFrame(rng.normal(size=(400, 4)), columns=cols), pd.DataFrame(shifted, columns=cols), repeats=1
    )
    assert diff.auc > 0.97
    assert max(diff.importance, key=diff.importance.get) == "c"


def _gaussian_stamps(n: int, *, sign: float, sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    size = 31
    yy, xx = np.mgrid[:size, :size] - size // 2
    source = 400.0 * np.exp(-(xx**2 + yy**2) / (2 * sigma_px**2))
    stamps = rng.normal(0.0, 10.0, (n, 3, size, size))
    stamps[:, 0] += 100.0 + source  # sky 100, noise 10
    stamps[:, 1] += 50.0  # reference noise 10 as well
    stamps[:, 2] += sign * source
    stamps[:, 2, :3, :] = np.nan  # a CCD edge: 3 of 31 rows missing
    return stamps.astype(np.float32)


def test_stamp_statistics_measure_background_noise_fwhm_and_sign() -> None:
    rng = np.random.default_rng(0)
    neg = stamp_statistics(_gaussian_stamps(20, sign=-1.0, sigma_px=1.5, rng=rng), pixel_scale=1.01, chunk=7)
    pos = stamp_statistics(_gaussian_stamps(20, sign=1.0, sigma_px=2.5, rng=rng), pixel_scale=1.01)
    assert list(neg.columns) == list(STAMP_STATISTICS) and len(neg) == 20
    assert np.allclose(neg["sci_background"], 100.0, atol=3.0)
    assert np.allclose(neg["ref_background"], 50.0, atol=2.0)
    assert np.allclose(neg["diff_noise"], 10.0, rtol=0.2)  # 1.4826 MAD of all pixels, source included
    assert np.allclose(neg["ref_sci_noise_ratio"], 1.0, rtol=0.25)  # the source widens the sci MAD
    assert (neg["diff_centre_sign"] == -1).all() and (pos["diff_centre_sign"] == 1).all()
    assert (neg["diff_peak_snr"] < -25).all() and (pos["diff_peak_snr"] > 25).all()  # 400 / ~12
    fwhm = 2.3548 * 1.01
    assert np.allclose(neg["diff_fwhm"], 1.5 * fwhm, rtol=0.1)
    assert np.allclose(pos["diff_fwhm"], 2.5 * fwhm, rtol=0.1)
    assert np.allclose(neg["diff_nan_fraction"], 3 / 31) and (neg["sci_nan_fraction"] == 0).all()


def test_compare_columns_flags_shifted_medians_and_missing_columns() -> None:
    rng = np.random.default_rng(0)
    sim = pd.DataFrame({"x": rng.normal(size=1000), "only_sim": 1.0, "y": rng.normal(size=1000)})
    real = pd.DataFrame({"x": rng.normal(3.0, 1.0, 200), "only_sim": np.nan, "y": rng.normal(size=200)})
    table = compare_columns(sim, real, ["x", "only_sim", "y", "absent"]).set_index("statistic")
    assert table.loc["x", "flag_median_outside_sim_10_90"]
    assert table.loc["x", "real_outside_sim_1_99"] > 0.3
    assert not table.loc["y", "flag_median_outside_sim_10_90"]
    assert table.loc["y", "real_outside_sim_1_99"] < 0.1
    assert table.loc["only_sim", "missing_in"] == "real" and table.loc["absent", "missing_in"] == "both"


def test_realism_end_to_end_on_a_tiny_dataset_and_the_fixture_alerts(small_cfg, tmp_path: Path) -> None:
    from hybrid.cli import main
    from hybrid.data.build import build_dataset

    dataset = build_dataset(small_cfg)
    out = tmp_path / "reports" / "realism"
    assert main(["realism", str(dataset), str(FIXTURE), "--out", str(out), "--max-sim", "300"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert 0.0 <= result["c2st_auc"] <= 1.0 and 0.0 <= result["c2st_stamps_auc"] <= 1.0
    assert result["real"]["n_alerts"] == 6
    # ZTF alerts carry no host association: the context features are missing on the real side only
    assert any(f.startswith("ctx_") for f in result["missing_in_real"])
    assert not set(result["missing_in_real"]) & set(result["columns_in_c2st"])
    stats = {row["statistic"]: row for row in result["table"]}
    assert set(STAMP_STATISTICS) <= set(stats)
    assert "| `diff_noise` |" in out.with_suffix(".md").read_text()
    for png in result["plots"]:
        assert (out.parent / png).stat().st_size > 1000


def test_bench_real_scores_the_alerts_against_drb(tiny_bundle: Path, tmp_path: Path) -> None:
    """`hybrid bench real` end to end on a cache holding the fixture alerts under the three names."""
    from hybrid.cli import main
    from hybrid.data.readers.recipes import FINK_ALERT_FILES, fink_paths

    cache = tmp_path / "cache"
    paths = fink_paths(cache)
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if name in FINK_ALERT_FILES:
            shutil.copy(FIXTURE, path)
        else:
            path.write_bytes(b"")
    objects = pd.read_parquet(FIXTURE, columns=["objectId"])["objectId"]
    pd.DataFrame({"ZTF Name": [objects.iloc[0], ""]}).to_parquet(paths["ctao_blazar_catalog"])
    out = tmp_path / "real"
    args = ["bench", "real", "--bundle", str(tiny_bundle), "--out", str(out), f"paths.cache_dir={cache}"]
    assert main(args) == 0
    r = json.loads(out.with_suffix(".json").read_text())
    assert r["n_alerts"] == 18 and (r["n_weak_real"], r["n_weak_bogus"]) == (6, 12)
    lo, hi = r["auc_vs_drb_ci"]
    assert lo <= r["auc_vs_drb"] <= hi
    assert r["drb_auc_vs_drb"] == 1.0
    # the fixture's rb against its drb labels, computed here independently
    from sklearn.metrics import roc_auc_score

    from hybrid.data.readers import read_alerts

    c = read_alerts(FIXTURE).candidates
    keep = (c["ztf_drb"] > 0.9) | (c["ztf_drb"] < 0.5)
    assert r["rb_auc_vs_drb"] == pytest.approx(roc_auc_score(c["ztf_drb"][keep] > 0.9, c["ztf_rb"][keep]))
    assert r["recall"]["agn"]["n"] == 3  # one object of the catalog, in each of the three files
    assert sum(sum(v.values()) for v in r["types_by_file"].values()) == 18
    assert (out.parent / r["plot"]).is_file()
    assert "ZTF `rb`" in out.with_suffix(".md").read_text()


def test_bench_real_without_a_run_says_what_to_run(tmp_path: Path) -> None:
    from hybrid.bench.real import BenchError, newest_quickstart_run

    with pytest.raises(BenchError, match=r"python run\.py"):
        newest_quickstart_run(tmp_path / "outputs")
