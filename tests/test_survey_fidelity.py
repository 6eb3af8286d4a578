"""Survey fidelity: a ZTF model trained on the simulation reads real ZTF alerts the same way.

* the per-exposure conditions follow the survey profile (exposure times, clear fraction, cloud);
* scores do not depend on the zero point: fluxes are features in uJy and stamps are compared in units
  of their own noise, so a real alert whose zero point and DN are shifted together scores the same;
* the model for ZTF is trained on exactly the features a ZTF alert carries;
* stored cutouts follow ZTF's convention (sky kept, template matched to the science image, negative
  detections as template minus science), on simulated and on real cutouts alike.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from hybrid.context.associate import CONTEXT_FEATURE_UNITS
from hybrid.data.build import build_dataset
from hybrid.data.dataset import read_dataset
from hybrid.data.readers import read_alerts
from hybrid.data.readers.base import framework_features
from hybrid.data.readers.ztf import ZTF_FEATURE_MAP, chunk_from_records
from hybrid.export import load_run_model
from hybrid.serving import Predictor
from tests.conftest import survey_profile
from tests.test_readers import PARQUET, astropy_image, fits_gz, records

CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")


def test_ztf_exposures_follow_the_published_conditions() -> None:
    ztf = survey_profile("ztf")
    rng = np.random.default_rng(0)
    draws = [ztf.draw_conditions(rng) for _ in range(4000)]
    t = np.array([d.exposure_time for d in draws])
    ext = np.array([d.extinction for d in draws])
    zp = np.array([d.zero_point for d in draws])
    assert set(t) == {30.0, 180.0} and 0.07 < (t == 180).mean() < 0.13
    # the clear fraction, and cloud up to the survey's limit
    assert 0.80 < (ext < 0.3).mean() < 0.92 and ext.max() <= ztf.cloud_max_extinction + 0.3
    clear30 = (t == 30) & (ext < 0.1)
    assert abs(np.median(zp[clear30]) - ztf.zero_point) < 0.05  # magzpsci ~26.3 for 30 s
    clear180 = (t == 180) & (ext < 0.1)
    assert abs(np.median(zp[clear180]) - ztf.zero_point - 2.5 * np.log10(6)) < 0.05
    assert zp.min() < 23.0  # cloudy nights reach the real stream's lowest zero points


def shifted(record: dict, dzp: float) -> dict:
    """The alert as if its exposure had a zero point ``dzp`` mag higher: every DN value scaled by
    ``10^(0.4 dzp)`` and ``magzpsci`` moved by ``dzp``; calibrated magnitudes are unchanged."""
    rec = copy.deepcopy(record)
    for name in CUTOUTS:
        rec[name]["stampData"] = fits_gz(astropy_image(rec[name]["stampData"]) * 10 ** (0.4 * dzp))
    rec["candidate"]["magzpsci"] += dzp
    return rec


@pytest.mark.parametrize("dzp", [-2.0, 2.0])
def test_scores_do_not_depend_on_the_zero_point(tiny_bundle: Path, dzp: float) -> None:
    predictor = Predictor(tiny_bundle, workers=1, batch_size=16)
    recs = records()
    base = predictor.score(chunk_from_records(recs, "fixture").decode(predictor.stamp_size))
    moved = chunk_from_records([shifted(r, dzp) for r in recs], "fixture").decode(predictor.stamp_size)
    assert not np.allclose(moved.stamps, chunk_from_records(recs, "f").decode(63).stamps, equal_nan=True)
    np.testing.assert_allclose(predictor.score(moved)["score"], base["score"], atol=0.01)


def test_a_ztf_model_sees_exactly_the_features_ztf_alerts_carry(tiny_run: Path) -> None:
    lacking = {f for f, source in ZTF_FEATURE_MAP.items() if not source} | set(CONTEXT_FEATURE_UNITS)
    ztf = survey_profile("ztf")
    assert set(ztf.alert_features) == set(framework_features()) - lacking
    model, cfg, _ = load_run_model(tiny_run)
    assert cfg.survey.name == "ztf" and model.features.names == list(ztf.alert_features)
    # and on real alerts, what the model reads is what the reader fills (nothing always missing)
    real = read_alerts(PARQUET).candidates
    assert not [f for f in model.features.names if real[f].isna().all()]
    assert all(real[f].isna().all() for f in lacking)


def central_peak(diff: np.ndarray) -> np.ndarray:
    """Largest pixel within 2 px of the stamp centre."""
    c = diff.shape[-1] // 2
    return np.nanmax(diff[:, c - 2 : c + 3, c - 2 : c + 3], axis=(1, 2))


def test_simulated_cutouts_follow_the_ztf_convention(small_cfg) -> None:
    ds = read_dataset(build_dataset(small_cfg))
    table, stamps = ds.candidates, np.asarray(ds.stamps)
    negative = ~table["isdiffpos"].to_numpy(bool)
    strong = (table["snr_psf"] > 10).to_numpy()
    assert (negative & strong).sum() >= 3
    # template minus science for negative detections: their source is a positive peak too
    assert (central_peak(stamps[negative & strong, 2]) > 0).all()
    sky_sci = np.nanmedian(stamps[:, 0], axis=(1, 2))
    sky_ref = np.nanmedian(stamps[:, 1], axis=(1, 2))
    assert np.median(sky_sci) > 50  # DN: the sky is kept
    np.testing.assert_allclose(np.median(sky_ref / sky_sci), 1.0, atol=0.05)  # and matched in the template
    assert "template - science" in ds.meta["channel_units"]["diff"]


def test_real_ztf_negative_detections_are_template_minus_science() -> None:
    batch = read_alerts(PARQUET)
    peaks = central_peak(batch.stamps[:, 2])
    assert (peaks > 0).all()
    negative = batch.candidates["isdiffpos"].to_numpy() == 0
    # and for those, the template is brighter than the science image at the centre
    if negative.any():
        c = batch.stamps.shape[-1] // 2
        box = (slice(None), slice(c - 1, c + 2), slice(c - 1, c + 2))
        sci = batch.stamps[negative, 0][box].sum(axis=(1, 2))
        ref = batch.stamps[negative, 1][box].sum(axis=(1, 2))
        assert (ref > sci).all()
