"""The simulator against the survey profiles it claims to follow."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.psf import MoffatPSF, fit_moffat, render_points
from hybrid.sim.artifacts import Artifact, saturate
from hybrid.sim.field import SimConfig, simulate_field
from hybrid.sim.sky import SkyConfig, star_cumulative
from tests.conftest import survey_profile

SURVEYS = ["ztf", "goto", "atlas", "rubin"]


@pytest.mark.parametrize("name", SURVEYS)
def test_profile_depth_matches_published(name: str) -> None:
    p = survey_profile(name)
    assert abs(p.limiting_magnitude() - p.depth_m5) < 0.25
    assert p.saturation_mag() < p.depth_m5 - 6  # a usable dynamic range


def test_star_counts_follow_the_luminosity_function() -> None:
    survey = survey_profile("ztf")
    cfg = SimConfig(shape=(512, 512), epochs_per_field=1)
    area = 512 * 512 * survey.pixel_area / 3600**2
    faint = survey.depth_m5 + cfg.sky.faint_margin
    observed, expected = 0, 0.0
    for field_id in range(6):
        f = simulate_field(survey, cfg, 1, field_id)
        density = f.stars.attrs["density_at_20"]
        grid = np.array([cfg.sky.bright_limit, faint])
        n_exp = np.diff(star_cumulative(grid, density, cfg.sky.star_count_slope))[0] * area
        observed += len(f.stars)
        expected += n_exp
        # the slope: stars per magnitude rise by 10^0.3 per magnitude
        bright, faint_half = (f.stars["mag"] < faint - 1).sum(), (f.stars["mag"] >= faint - 1).sum()
        assert faint_half > bright * 0.5
    assert abs(observed - expected) < 4 * np.sqrt(expected)


def test_rendered_psf_has_the_profile_fwhm() -> None:
    psf = MoffatPSF(fwhm=2.6, beta=2.5, shape=(101, 101))
    image = np.zeros((101, 101), np.float32)
    render_points(image, psf, np.array([50.3]), np.array([49.8]), np.array([1e5]))
    fwhm, beta = fit_moffat(image[30:71, 30:71])
    assert fwhm == pytest.approx(2.6, rel=0.03)
    assert beta == pytest.approx(2.5, rel=0.1)
    assert image.sum() == pytest.approx(1e5, rel=0.02)  # flux kept, bar the far wings


def test_simulated_stars_match_the_epoch_psf_and_seeing() -> None:
    survey = survey_profile("ztf")
    cfg = SimConfig(shape=(384, 384), epochs_per_field=1, sky=SkyConfig(star_density_range=(2e4, 3e4)))
    f = simulate_field(survey, cfg, 3, 0)
    sci = f.epochs[0].science
    sky = np.median(sci.image)
    stars = f.stars
    sat = survey.saturation_mag() + 1.0
    cand = stars[
        (stars.mag > sat) & (stars.mag < sat + 3) & stars.x.between(20, 363) & stars.y.between(20, 363)
    ]
    measured, expected = [], []
    for s in cand.itertuples():
        others = stars[(stars.index != s.Index)]
        near = np.hypot(others.x - s.x, others.y - s.y) < 12
        if (others[near].mag < s.mag + 4).any():
            continue  # not isolated
        ix, iy = round(s.x), round(s.y)
        true_psf = f.epochs[0].true_psf
        fwhm, _ = fit_moffat(sci.image[iy - 10 : iy + 11, ix - 10 : ix + 11] - sky, beta=true_psf.beta)
        measured.append(fwhm)
        expected.append(true_psf.fwhm_at(s.x, s.y))
    assert len(measured) >= 3
    assert np.median(np.array(measured) / np.array(expected)) == pytest.approx(1.0, abs=0.03)
    seeing = f.epochs[0].conditions["fwhm_arcsec"]
    assert 0.3 * survey.seeing_median < seeing < 3 * survey.seeing_median


def test_field_is_a_pure_function_of_seed_and_id() -> None:
    survey = survey_profile("goto")
    cfg = SimConfig(shape=(128, 128), epochs_per_field=1)
    a, b = simulate_field(survey, cfg, 5, 2), simulate_field(survey, cfg, 5, 2)
    np.testing.assert_array_equal(a.epochs[0].science.image, b.epochs[0].science.image)
    np.testing.assert_array_equal(a.reference.image, b.reference.image)
    c = simulate_field(survey, cfg, 5, 3)
    assert not np.array_equal(a.reference.image, c.reference.image)


def test_transients_catalogue_and_artifacts_are_realistic() -> None:
    survey = survey_profile("ztf")
    f = simulate_field(survey, SimConfig(shape=(512, 512), epochs_per_field=2), 0, 4)
    truth = pd_concat([e.transients for e in f.epochs])
    assert set(truth["type"]) >= {"sn", "nuclear", "variable_star", "asteroid"}
    # magnitudes reach below the detection limit, so completeness can be measured
    assert (truth["mag"] > survey.depth_m5).any() and (truth["mag"] < survey.depth_m5 - 1).any()
    sn = truth[truth["type"] == "sn"]
    assert (sn["host"] >= 0).all() and sn["host_offset_re"].median() < 3
    cat = f.catalog
    gal = cat[cat.kind_true == "galaxy"]
    assert len(gal) < len(f.galaxies)  # incomplete
    assert set(gal["z_kind"]) <= {"spec", "phot", "none"}
    assert cat[cat.kind_true == "star"]["sgscore"].mean() > gal["sgscore"].mean() + 0.2
    assert 0.5 < cat["mag_err"].min() * 100 < 5  # 0.5-5% errors at the bright end
    ref = f.reference
    assert ref.background_subtracted and not f.epochs[0].science.background_subtracted
    assert np.median(ref.variance) < np.median(f.epochs[0].science.variance) / 4  # a deeper stack


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_saturation_bleeds_and_conserves_charge() -> None:
    image = np.zeros((64, 16), np.float32)
    image[30:33, 8] = [3000.0, 5000.0, 3000.0]
    mask = np.zeros_like(image, np.uint16)
    amap = np.zeros_like(image, np.uint8)
    saturate(image, mask, amap, 1000.0)
    column = image[:, 8]
    assert column.max() == 1000.0
    assert (column == 1000.0).sum() == 11  # 8000 e- of excess fills 8 more pixels
    assert (amap[:, 8] == Artifact.SATURATION).sum() == 11 and mask[:, 8].astype(bool).sum() == 11


def test_frames_up_to_4096_but_not_beyond() -> None:
    SimConfig(shape=(4096, 4096))
    with pytest.raises(ValueError, match="4096"):
        SimConfig(shape=(8192, 8192))
