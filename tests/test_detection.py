"""Detection, cutouts and measurements on difference images."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from hybrid.detection import Detector, cut_stamps, edge_fraction
from hybrid.detection.candidates import Frame
from hybrid.exposure import Exposure
from hybrid.psf import MoffatPSF, render_points
from hybrid.subtraction import SUBTRACTORS


def _wcs(n: int) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [n / 2, n / 2]
    w.wcs.cdelt = [-1.0 / 3600, 1.0 / 3600]
    return w


def _pair(
    rng: np.random.Generator, n: int, source_flux: float
) -> tuple[Exposure, Exposure, tuple[float, float]]:
    shape = (n, n)
    sci_psf, ref_psf = MoffatPSF(3.2, 3.0, shape), MoffatPSF(2.4, 3.0, shape)
    sigma_sci, sigma_ref = 10.0, 4.0
    sci = np.zeros(shape, np.float32)
    ref = np.zeros(shape, np.float32)
    stars_x, stars_y = rng.uniform(10, n - 10, 30), rng.uniform(10, n - 10, 30)
    stars_f = 10 ** rng.uniform(3, 4.5, 30)
    render_points(sci, sci_psf, stars_x, stars_y, stars_f)
    render_points(ref, ref_psf, stars_x, stars_y, stars_f)
    pos = (n / 2 + 0.3, n / 2 - 0.2)
    render_points(sci, sci_psf, np.array([pos[0]]), np.array([pos[1]]), np.array([source_flux]))
    sci_var = (sigma_sci**2 + np.maximum(sci, 0) / 2.0).astype(np.float32)
    ref_var = (sigma_ref**2 + np.maximum(ref, 0) / 20.0).astype(np.float32)
    sci += rng.normal(0, 1, shape).astype(np.float32) * np.sqrt(sci_var)
    ref += rng.normal(0, 1, shape).astype(np.float32) * np.sqrt(ref_var)
    mask = np.zeros(shape, np.uint16)
    kw = dict(mask=mask, wcs=_wcs(n), zero_point=26.0, background_subtracted=True)
    return (
        Exposure(image=sci, variance=sci_var, psf=sci_psf, **kw),
        Exposure(image=ref, variance=ref_var, psf=ref_psf, **kw),
        pos,
    )


@pytest.mark.parametrize("method", ["zogy", "naive"])
def test_injected_point_source_is_detected_with_its_flux(method: str) -> None:
    rng = np.random.default_rng(11)
    flux = 3000.0
    sci, ref, (x0, y0) = _pair(rng, 256, flux)
    diff = SUBTRACTORS.get(method)().subtract(sci, ref)
    det = Detector(threshold=5.0).detect(diff)
    d = np.hypot(det["x"] - x0, det["y"] - y0)
    assert d.min() < 1.0, "the transient was not detected"
    i = int(np.argmin(d))
    frame = Frame(sci, ref, diff, pixel_scale=1.0)
    x, y, sign = det["x"].to_numpy()[[i]], det["y"].to_numpy()[[i]], det["sign"].to_numpy()[[i]]
    row = frame.measure(frame.cut(x, y, 31), x, y, sign).iloc[0]
    assert row["isdiffpos"]
    ujy = 10 ** (0.4 * (23.9 - 26.0))  # the exposures' zero point is 26: fluxes come out in uJy
    assert abs(row["flux_psf"] - flux * ujy) < 3 * row["flux_psf_err"]
    assert row["mag_psf"] == pytest.approx(26.0 - 2.5 * np.log10(flux), abs=3 * row["sigma_mag_psf"])
    assert row["snr_psf"] > 10
    assert row["fwhm"] == pytest.approx(diff.psf.fwhm_at(128, 128), rel=0.35)
    assert row["elongation"] < 1.5


def test_pure_noise_gives_few_detections_at_5_sigma() -> None:
    rng = np.random.default_rng(2)
    sci, ref, _ = _pair(rng, 256, 0.0)
    diff = SUBTRACTORS.get("zogy")().subtract(sci, ref)
    assert len(Detector(threshold=5.0).detect(diff)) <= 3


def test_stamps_at_edges_are_filled_and_flagged() -> None:
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    stamps = cut_stamps(image, np.array([0.0, 5.0]), np.array([0.0, 5.0]), 5)
    assert stamps.shape == (2, 5, 5)
    assert np.isnan(stamps[0, :2, :]).all() and np.isnan(stamps[0, :, :2]).all()
    assert stamps[0, 2, 2] == image[0, 0]
    np.testing.assert_array_equal(stamps[1], image[3:8, 3:8])
    frac = edge_fraction(image.shape, np.array([0.0, 5.0]), np.array([0.0, 5.0]), 5)
    assert frac[0] == pytest.approx(1 - 9 / 25) and frac[1] == 0.0
    with pytest.raises(ValueError, match="odd"):
        cut_stamps(image, np.array([1.0]), np.array([1.0]), 4)


def _candidate_on_star(star_flux: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Difference stamps (ADU) of a 500 ADU point source on a star of ``star_flux`` ADU whose photons
    (gain 1) add to the background noise of 10 ADU per pixel, as a subtraction leaves them."""
    s, psf_img = 31, MoffatPSF(fwhm=2.5, beta=2.5, shape=(31, 31)).image_at(15, 15, 21)
    model = np.zeros((s, s), np.float32)
    model[5:26, 5:26] = psf_img
    var = 100.0 + star_flux * model
    diff = 500.0 * model + np.sqrt(var) * rng.standard_normal((200, s, s))
    return diff.astype(np.float32), np.broadcast_to(var, diff.shape).astype(np.float32), psf_img


def test_background_chi2_errors_grow_with_the_star_under_the_candidate() -> None:
    from hybrid.detection.features import measure_stamps

    rng = np.random.default_rng(3)
    kw = {"zero_point": 25.0, "pixel_scale": 1.0}
    true_flux = 500 * 10 ** (0.4 * (23.9 - 25.0))  # uJy
    for star in (0.0, 1e4):
        diff, var, psf = _candidate_on_star(star, rng)
        mask, sign = np.zeros(diff.shape, np.uint16), np.ones(len(diff))
        pixel = measure_stamps(diff, var, mask, psf, sign, **kw)
        ztf = measure_stamps(diff, var, mask, psf, sign, psf_fit_errors="background_chi2", **kw)
        pull = {
            k: (t["flux_psf"] - true_flux) / t["flux_psf_err"] for k, t in (("pixel", pixel), ("ztf", ztf))
        }
        # the per-pixel convention knows the star's photons: chi2 ~ 1 and pulls of unit width
        assert abs(pixel["chi2_psf"].median() - 1) < 0.1 and 0.85 < pull["pixel"].std() < 1.15
        if star == 0:  # on the bare sky both conventions are one
            assert abs(ztf["chi2_psf"].median() - 1) < 0.15
            assert abs((ztf["flux_psf_err"] / pixel["flux_psf_err"]).median() - 1) < 0.05
        else:  # the background convention sees the star's photons as chi2, and sqrt(chi2) covers them
            chi2 = ztf["chi2_psf"].median()
            assert chi2 > 2.5 and 1.0 < pull["ztf"].std() < 1.5
            assert pull["ztf"].std() * np.sqrt(chi2) > 2  # the background error alone would not
    with pytest.raises(ValueError, match="psf_fit_errors"):
        measure_stamps(diff, var, mask, psf, sign, psf_fit_errors="sextractor", **kw)
