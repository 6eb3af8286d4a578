"""hybrid.photometry on simulated Gaussian sources: PSF fluxes recover the injected flux within
their errors (whose scale is right), aperture fluxes converge with radius and the aperture
correction makes them radius-independent, and unusable pixels or frame edges give NaN."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.photometry import (
    aperture_fluxes,
    forced_psf_fluxes,
    psf_fluxes,
    psf_fraction,
    stamp_aperture_fluxes,
    windowed_stamp_fluxes,
)

SIGMA_PSF = 1.8  # px
SKY_SIGMA = 4.0  # ADU per pixel


def gaussian(size: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Unit-sum Gaussian of SIGMA_PSF sampled on a size x size grid, centred (dx, dy) off its middle."""
    u = np.arange(size) - size // 2
    g = np.exp(-0.5 * (((u[None, :] - dx) ** 2 + (u[:, None] - dy) ** 2) / SIGMA_PSF**2))
    return g / g.sum() if dx == dy == 0 else g / (2 * np.pi * SIGMA_PSF**2)


def field(
    seed: int, flux: float, background: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A grid of equal point sources at random sub-pixel positions on Gaussian sky noise (+ an offset)."""
    rng = np.random.default_rng(seed)
    shape = (400, 400)
    xc = np.repeat(np.arange(25, 400, 35), 11)[:121].astype(float)
    yc = np.tile(np.arange(25, 400, 35), 11)[:121].astype(float)
    x, y = xc + rng.uniform(-0.5, 0.5, xc.size), yc + rng.uniform(-0.5, 0.5, yc.size)
    model = np.zeros(shape)
    for xs, ys in zip(x, y, strict=True):
        ix, iy = int(np.rint(xs)), int(np.rint(ys))
        model[iy - 12 : iy + 13, ix - 12 : ix + 13] += flux * gaussian(25, xs - ix, ys - iy)
    variance = np.full(shape, SKY_SIGMA**2) + model
    image = (model + background + rng.standard_normal(shape) * np.sqrt(variance)).astype(np.float32)
    return image, variance.astype(np.float32), x, y


@pytest.mark.parametrize("background", [False, True])
def test_psf_flux_recovers_the_injected_flux_within_its_error(background: bool) -> None:
    flux = 2000.0
    image, variance, x, y = field(1, flux)
    f, e = psf_fluxes(image, variance, np.zeros(image.shape, bool), x, y, gaussian(15), background=background)
    pull = (f - flux) / e
    assert np.isfinite(pull).all()
    assert abs(pull.mean()) < 4 / np.sqrt(pull.size)  # unbiased
    assert 0.8 < pull.std() < 1.2  # and the errors have the right scale
    assert (flux / e > 20).all()  # the check has teeth


def test_the_local_background_keeps_a_sky_offset_out_of_the_psf_flux() -> None:
    flux, offset = 2000.0, 3.0  # a sky-subtraction error of 0.75 sigma per pixel
    image, variance, x, y = field(2, flux, background=offset)
    nowhere = np.zeros(image.shape, bool)
    fitted, err = psf_fluxes(image, variance, nowhere, x, y, gaussian(15), background=True)
    plain, _ = psf_fluxes(image, variance, nowhere, x, y, gaussian(15), background=False)
    assert abs(np.mean(fitted) - flux) < 4 * np.median(err) / np.sqrt(x.size)
    assert np.mean(plain) - flux > 10 * np.median(err) / np.sqrt(x.size)  # biased high without it


def test_aperture_flux_converges_with_radius_and_the_correction_removes_the_dependence() -> None:
    flux = 5000.0
    image, variance, x, y = field(3, flux)
    nowhere = np.zeros(image.shape, bool)
    radii = [1.5 * SIGMA_PSF, 2.5 * SIGMA_PSF, 4.0 * SIGMA_PSF, 6.0 * SIGMA_PSF]
    raw = [np.mean(aperture_fluxes(image, variance, nowhere, x, y, r)[0]) for r in radii]
    assert np.all(np.diff(raw) > 0)  # grows with the radius ...
    assert abs(raw[-1] - flux) < 0.01 * flux  # ... to the total flux
    assert raw[0] < 0.7 * flux
    psf = gaussian(41)
    # from 2.5 sigma out: inside ~1.5 sigma the corrected flux depends on where in its pixel a source
    # sits (the centred PSF's fraction is not an off-centre source's), ~1% here
    for r in radii[1:]:
        f, e = aperture_fluxes(image, variance, nowhere, x, y, r, psf=psf)
        assert abs(np.mean(f) - flux) < 4 * np.median(e) / np.sqrt(x.size), r
        assert 0.8 < np.std(f - flux) / np.median(e) < 1.2
    assert psf_fraction(psf, 6.0 * SIGMA_PSF) == pytest.approx(1.0, abs=1e-6)
    assert psf_fraction(np.stack([psf, psf]), 1.0).shape == (2,)


def test_unusable_pixels_and_frame_edges_give_nan() -> None:
    image, variance, x, y = field(4, 2000.0)
    invalid = np.zeros(image.shape, bool)
    invalid[int(y[5]), int(x[5]) + 3] = True  # a bad pixel in the sixth source's aperture and PSF box
    x, y = x.copy(), y.copy()
    x[0], y[0] = 3.0, 200.0  # too close to the edge for the aperture and the PSF box
    f, _ = aperture_fluxes(image, variance, invalid, x, y, 5.0)
    p, _ = psf_fluxes(image, variance, invalid, x, y, gaussian(15))
    for flux in (f, p):
        assert np.isnan(flux[[0, 5]]).all()
        assert np.isfinite(np.delete(flux, [0, 5])).all()


def test_forced_stamp_photometry_is_unbiased_with_the_right_errors() -> None:
    rng = np.random.default_rng(5)
    n, flux = 400, 800.0
    psf = gaussian(15)
    variances = np.full((n, 15, 15), SKY_SIGMA**2) + flux * psf
    stamps = flux * psf + rng.standard_normal((n, 15, 15)) * np.sqrt(variances)
    stamps[0, 7, 7] = np.nan  # a missing pixel is left out, not propagated
    f, e, chi2 = forced_psf_fluxes(stamps, variances, psf)
    pull = (f - flux) / e
    assert np.isfinite(pull).all()
    assert abs(pull.mean()) < 4 / np.sqrt(n) and 0.85 < pull.std() < 1.15
    assert 0.9 < np.median(chi2) < 1.1
    ap, ap_err = stamp_aperture_fluxes(stamps[1:], variances[1:], 7.0)
    assert abs(np.mean(ap) - flux * psf_fraction(psf, 7.0)) < 4 * np.median(ap_err) / np.sqrt(n)
    assert np.median(ap_err) > np.median(e)  # the optimal PSF flux beats the aperture


def test_windowed_stamp_fluxes_are_exact_on_noiseless_stamps_with_a_background() -> None:
    psf = gaussian(31)
    stamps = np.stack([f * psf + b for f, b in [(1000.0, 0.0), (500.0, 2.0), (50.0, -1.0)]])
    flux, err = windowed_stamp_fluxes(stamps, np.ones_like(stamps), psf, fwhm=2.3548 * SIGMA_PSF)
    np.testing.assert_allclose(flux, [1000.0, 500.0, 50.0], rtol=1e-9)
    assert (err > 0).all()
