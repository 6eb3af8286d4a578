"""Image subtraction: the Subtractor contract for every registered method, ZOGY's noise properties
(Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27), flux of injected transients, and NaN handling.

Methods that fit on stars (Alard-Lupton) need stars in the frames, so the contract and NaN tests use
:func:`star_pair`, a grid of static stars on noise; the pure-noise :func:`noise_pair` is for the
statistics of ZOGY's outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy.stats import norm

from hybrid.exposure import Difference, Exposure, InvalidExposureError, Mask
from hybrid.photometry import psf_fluxes
from hybrid.psf import MoffatPSF, render_points
from hybrid.subtraction import SUBTRACTORS, Subtractor
from hybrid.subtraction.zogy import ZOGYSubtractor

ZP_SCI, ZP_REF = 25.0, 25.7  # F_r = 10**(0.4 * 0.7) ~ 1.9: the reference counts more ADU per photon


def make_wcs(shape: tuple[int, int]) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-1.0 / 3600.0, 1.0 / 3600.0]  # 1 arcsec / pixel
    wcs.wcs.crpix = [shape[1] / 2.0, shape[0] / 2.0]
    wcs.wcs.crval = [150.0, 2.0]
    return wcs


def make_exposure(
    rng: np.random.Generator,
    shape: tuple[int, int],
    fwhm: float,
    sigma: float,
    zero_point: float,
    sources: Sequence[tuple[float, float, float]] = (),
    source: str = "test",
    beta: float = 3.0,
) -> Exposure:
    """Background-subtracted Gaussian noise of rms ``sigma`` plus point sources ``(x, y, flux)``
    with their Poisson noise (gain 1); the variance image is the true per-pixel variance."""
    psf = MoffatPSF(fwhm=fwhm, beta=beta, shape=shape)
    model = np.zeros(shape, np.float32)
    for x, y, flux in sources:
        render_points(model, psf, [x], [y], [flux])
    variance = (sigma**2 + np.maximum(model, 0.0)).astype(np.float32)
    image = model + rng.standard_normal(shape, dtype=np.float32) * np.sqrt(variance)
    return Exposure(
        image=image,
        variance=variance,
        mask=np.zeros(shape, np.uint16),
        psf=psf,
        wcs=make_wcs(shape),
        zero_point=zero_point,
        background_subtracted=True,
        source=source,
    )


def noise_pair(seed: int, shape: tuple[int, int] = (256, 256)) -> tuple[Exposure, Exposure]:
    """Pure noise; different PSF widths, noise levels and zero points for science and reference."""
    rng = np.random.default_rng(seed)
    sci = make_exposure(rng, shape, fwhm=3.2, sigma=10.0, zero_point=ZP_SCI, source="sci")
    ref = make_exposure(rng, shape, fwhm=2.2, sigma=4.0, zero_point=ZP_REF, source="ref")
    return sci, ref


def star_pair(
    seed: int,
    shape: tuple[int, int] = (192, 224),
    spacing: int = 24,
    margin: int = 22,
    f_r: float = 10 ** (0.4 * (ZP_REF - ZP_SCI)),
    sci_fwhm: float = 3.2,
    ref_fwhm: float = 2.2,
) -> tuple[Exposure, Exposure]:
    """Static stars (science flux 1e4 to 1e5 ADU, reference flux ``f_r`` times that) on a jittered
    grid, with the noise and PSFs of :func:`noise_pair`."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    gy, gx = np.mgrid[margin : ny - margin + 1 : spacing, margin : nx - margin + 1 : spacing]
    x = gx.ravel() + rng.uniform(-2, 2, gx.size)
    y = gy.ravel() + rng.uniform(-2, 2, gy.size)
    flux = 10 ** rng.uniform(4, 5, gx.size)
    sci = make_exposure(rng, shape, sci_fwhm, 10.0, ZP_SCI, list(zip(x, y, flux, strict=True)), source="sci")
    ref = make_exposure(
        rng, shape, ref_fwhm, 4.0, ZP_REF, list(zip(x, y, f_r * flux, strict=True)), source="ref"
    )
    return sci, ref


def psf_flux(diff: Difference, x: int, y: int, size: int = 21) -> tuple[float, float]:
    """PSF-weighted flux sum(P_D diff) / sum(P_D^2) on a stamp at (x, y) and its error from the
    propagated per-pixel variance (pixel correlations neglected)."""
    nowhere = np.zeros(diff.image.shape, bool)
    psf = diff.psf.image_at(x, y, size)
    flux, err = psf_fluxes(
        diff.image, diff.variance, nowhere, np.array([x]), np.array([y]), psf, background=False
    )
    return float(flux[0]), float(err[0])


def available(name: str) -> Subtractor:
    """Registered subtractor ``name``; the test is skipped, with the reason, for a peer not installed."""
    if why := SUBTRACTORS.get(name).unavailable():
        pytest.skip(f"{name}: {why}")
    return SUBTRACTORS.get(name)()


@pytest.mark.parametrize("name", SUBTRACTORS.names())
def test_contract(name: str) -> None:
    sci, ref = star_pair(0)
    diff = available(name).subtract(sci, ref)
    assert isinstance(diff, Difference)
    assert diff.method == name
    for plane in (diff.image, diff.variance):
        assert plane.shape == sci.shape
        assert plane.dtype == np.float32
    assert diff.mask.shape == sci.shape and diff.mask.dtype == np.uint16
    valid = (diff.mask & Mask.NO_DATA) == 0
    assert valid.all()
    assert np.isfinite(diff.image[valid]).all()
    assert (diff.variance[valid] > 0).all()
    if diff.score is not None:
        assert diff.score.shape == sci.shape and diff.score.dtype == np.float32
        assert np.isfinite(diff.score[valid]).all()
    kernel = diff.psf.image_at(112, 96, 15)
    assert kernel.shape == (15, 15)
    np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
    assert np.unravel_index(np.argmax(kernel), kernel.shape) == (7, 7)
    assert diff.zero_point == sci.zero_point
    assert diff.wcs is sci.wcs


def test_zogy_difference_is_white_unit_variance() -> None:
    sci, ref = noise_pair(1, shape=(512, 512))
    diff = ZOGYSubtractor().subtract(sci, ref)
    f_r = 10 ** (0.4 * (ZP_REF - ZP_SCI))
    assert diff.meta["F_n"] == 1.0
    np.testing.assert_allclose(diff.meta["F_r"], f_r)
    np.testing.assert_allclose([diff.meta["sigma_n"], diff.meta["sigma_r"]], [10.0, 4.0], rtol=1e-5)
    np.testing.assert_allclose(diff.meta["F_D"], f_r / np.hypot(10.0 * f_r, 4.0))  # ZOGY16 eq. 15
    inner = (slice(32, -32), slice(32, -32))  # away from the zero padding
    d = diff.image[inner].astype(np.float64) * diff.meta["F_D"]
    assert abs(d.std() - 1.0) < 0.03
    assert abs(d.mean()) < 0.01
    pull = diff.image[inner] / np.sqrt(diff.variance[inner])
    assert abs(pull.std() - 1.0) < 0.03
    # D is whitened: neighbouring pixels are uncorrelated
    assert abs(np.mean(d[:, 1:] * d[:, :-1])) < 0.01
    assert abs(np.mean(d[1:, :] * d[:-1, :])) < 0.01
    # the difference PSF is between the two input PSFs in width
    assert 2.2 < diff.psf.fwhm_at(256, 256) < 4.0
    # the robust image-based noise estimate agrees with the variance planes on pure noise
    mad = ZOGYSubtractor(noise="mad").subtract(sci, ref)
    np.testing.assert_allclose([mad.meta["sigma_n"], mad.meta["sigma_r"]], [10.0, 4.0], rtol=0.03)


def test_zogy_score_false_alarm_rate() -> None:
    """|S_corr| on pure noise follows the two-sided Gaussian tail.

    S_corr is smooth on the PSF scale, so tail counts fluctuate more than for independent pixels:
    over 30 seeds of this set-up the measured/expected ratio scattered by 1.4% above 3 sigma and
    6% above 4 sigma, whence the tolerances.
    """
    rng = np.random.default_rng(2)
    shape = (1024, 1024)
    counts = np.zeros(3)
    npix = 0
    subtractor = ZOGYSubtractor()
    for _ in range(8):
        sci = make_exposure(rng, shape, fwhm=2.2, sigma=10.0, zero_point=ZP_SCI)
        ref = make_exposure(rng, shape, fwhm=1.6, sigma=4.0, zero_point=ZP_REF)
        score = np.abs(subtractor.subtract(sci, ref).score)
        counts += [(score > k).sum() for k in (3, 4, 5)]
        npix += score.size
    expected = 2 * norm.sf([3, 4, 5]) * npix
    assert counts[0] == pytest.approx(expected[0], rel=0.05)
    assert counts[1] == pytest.approx(expected[1], rel=0.15)
    assert counts[2] <= expected[2] + 3 * np.sqrt(expected[2]) + 3


def test_zogy_astrometric_noise_lowers_score_of_static_star() -> None:
    rng = np.random.default_rng(3)
    shape = (128, 128)
    star = (64, 64, 2e5)
    f_r = 10 ** (0.4 * (ZP_REF - ZP_SCI))
    sci = make_exposure(rng, shape, 3.2, 10.0, ZP_SCI, [star])
    # a star misregistered by 0.3 pixel
    ref = make_exposure(rng, shape, 2.2, 4.0, ZP_REF, [(star[0] + 0.3, star[1], star[2] * f_r)])
    plain = ZOGYSubtractor().subtract(sci, ref)
    corrected = ZOGYSubtractor(astrometric_sigma=0.3).subtract(sci, ref)
    stamp = (slice(54, 75), slice(54, 75))
    assert np.abs(corrected.score[stamp]).max() < np.abs(plain.score[stamp]).max()
    assert np.abs(corrected.score[stamp]).max() < 5.0
    np.testing.assert_array_equal(corrected.image, plain.image)


@pytest.mark.parametrize("name", ["zogy", "naive"])
def test_injected_transient_flux(name: str) -> None:
    """A transient in the science image keeps its flux; a static star subtracts to the noise."""
    shape = (256, 256)
    f_r = 10 ** (0.4 * (ZP_REF - ZP_SCI))
    star = (80, 90, 2e4)  # science flux; reference flux is F_r times this
    transient = (170, 160, 1500.0)
    rng = np.random.default_rng(4)
    sci = make_exposure(rng, shape, 3.5, 10.0, ZP_SCI, [star, transient])
    ref = make_exposure(rng, shape, 2.4, 5.0, ZP_REF, [(star[0], star[1], star[2] * f_r)])
    diff = SUBTRACTORS.get(name)().subtract(sci, ref)

    flux, err = psf_flux(diff, transient[0], transient[1])
    assert abs(flux - transient[2]) < 3 * err
    assert transient[2] / err > 10  # the check has teeth

    residual, err_star = psf_flux(diff, star[0], star[1])
    chi2 = np.mean(diff.image[80:101, 70:91] ** 2 / diff.variance[80:101, 70:91])
    if name == "zogy":
        assert abs(residual) < 4 * err_star
        assert chi2 < 1.3
    else:  # Gaussian matching of beta=3 Moffat PSFs by FWHM leaves a residual of ~9% of the flux
        assert abs(residual) < 0.15 * star[2]
        assert chi2 < 2.0
    if diff.score is not None:  # a 1500 ADU transient is a > 10 sigma detection in S_corr
        assert diff.score[transient[1], transient[0]] > 10
        assert abs(diff.score[star[1], star[0]]) < 5


@pytest.mark.parametrize("name", ["zogy", "naive"])
@pytest.mark.parametrize("science_broader", [True, False])
def test_static_star_near_gaussian_psfs(name: str, science_broader: bool) -> None:
    """With near-Gaussian PSFs (Moffat beta=100) Gaussian matching is exact, so the naive method
    too must subtract a bright static star to the noise, whichever image is convolved."""
    shape = (128, 128)
    f_r = 10 ** (0.4 * (ZP_REF - ZP_SCI))
    star = (64, 60, 2e4)
    fwhm_sci, fwhm_ref = (3.5, 2.4) if science_broader else (2.4, 3.5)
    rng = np.random.default_rng(7)
    sci = make_exposure(rng, shape, fwhm_sci, 10.0, ZP_SCI, [star], beta=100.0)
    ref = make_exposure(rng, shape, fwhm_ref, 5.0, ZP_REF, [(star[0], star[1], star[2] * f_r)], beta=100.0)
    diff = SUBTRACTORS.get(name)().subtract(sci, ref)
    residual, err = psf_flux(diff, star[0], star[1])
    assert abs(residual) < 4 * err
    chi2 = np.mean(diff.image[50:71, 54:75] ** 2 / diff.variance[50:71, 54:75])
    assert chi2 < 1.3
    if name == "naive":
        assert diff.meta["convolved"] == ("reference" if science_broader else "science")
        assert diff.psf is (sci.psf if science_broader else ref.psf)


@pytest.mark.parametrize("name", SUBTRACTORS.names())
def test_no_data_strip(name: str) -> None:
    sci, ref = star_pair(5, shape=(192, 192))
    ref.image[:, 40:50] = np.nan
    ref.mask[:, 40:50] |= Mask.NO_DATA
    ref.mask[10, 100] |= Mask.SATURATED
    sci.mask[20, 110] |= Mask.BAD
    ref.validate()
    diff = available(name).subtract(sci, ref)
    no_data = (diff.mask & Mask.NO_DATA) != 0
    assert no_data[:, 40:50].all()
    assert np.isnan(diff.image[:, 40:50]).all()
    assert np.isnan(diff.variance[:, 40:50]).all()
    far = np.ones(sci.shape, bool)
    far[:, 40 - 20 : 50 + 20] = False
    assert not no_data[far].any()
    assert np.isfinite(diff.image[far]).all() and np.isfinite(diff.variance[far]).all()
    assert np.array_equal(np.isnan(diff.image), no_data)
    if diff.score is not None:
        assert np.array_equal(np.isnan(diff.score), no_data)
    assert diff.mask[10, 100] & Mask.SATURATED and diff.mask[20, 110] & Mask.BAD


@pytest.mark.parametrize("name", SUBTRACTORS.names())
def test_misaligned_or_unsubtracted_inputs_raise(name: str) -> None:
    sci, _ = noise_pair(6, shape=(64, 64))
    _, ref = noise_pair(6, shape=(64, 80))
    subtractor = SUBTRACTORS.get(name)()
    with pytest.raises(InvalidExposureError, match="shape"):
        subtractor.subtract(sci, ref)
    sci, ref = noise_pair(6, shape=(64, 64))
    ref.background_subtracted = False
    with pytest.raises(InvalidExposureError, match="background_subtracted"):
        subtractor.subtract(sci, ref)
