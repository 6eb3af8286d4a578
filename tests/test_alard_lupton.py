"""Alard-Lupton PSF matching (Alard & Lupton 1998; Alard 2000): known kernels are recovered, a
spatially varying kernel is tracked, fluxes are preserved in both convolution directions, and
degenerate inputs fail with errors that name the exposure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from hybrid.exposure import Exposure, InvalidExposureError, Mask
from hybrid.psf import MoffatPSF, render_points
from hybrid.subtraction.alard_lupton import AlardLuptonSubtractor, gaussian_basis
from tests.test_subtraction import ZP_REF, ZP_SCI, make_wcs, noise_pair, star_pair

F_R = 10 ** (0.4 * (ZP_REF - ZP_SCI))


def gaussian_kernel(sigma: float, half: int) -> np.ndarray:
    u = np.arange(-half, half + 1)
    g = np.exp(-0.5 * (u / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def grid_stars(rng: np.random.Generator, shape: tuple[int, int], spacing: int = 32, margin: int = 26):
    ny, nx = shape
    gy, gx = np.mgrid[margin : ny - margin + 1 : spacing, margin : nx - margin + 1 : spacing]
    x = gx.ravel() + rng.uniform(-3, 3, gx.size)
    y = gy.ravel() + rng.uniform(-3, 3, gy.size)
    return x, y, 10 ** rng.uniform(4.3, 5.0, gx.size)


def exposure_from_model(
    rng: np.random.Generator, model: np.ndarray, sigma: float, psf: MoffatPSF, zero_point: float, source: str
) -> Exposure:
    variance = (sigma**2 + np.maximum(model, 0.0)).astype(np.float32)
    image = (model + rng.standard_normal(model.shape) * np.sqrt(variance)).astype(np.float32)
    mask = np.zeros(model.shape, np.uint16)
    return Exposure(
        image,
        variance,
        mask,
        psf,
        make_wcs(model.shape),
        zero_point,
        background_subtracted=True,
        source=source,
    )


def test_basis_carries_the_flux_in_its_first_function() -> None:
    basis = gaussian_basis(8, (0.7, 1.5, 3.0), (6, 4, 2))
    assert basis.shape == (28 + 15 + 6, 17, 17)
    np.testing.assert_allclose(basis[0].sum(), 1.0)
    np.testing.assert_allclose(basis[1:].sum(axis=(1, 2)), 0.0, atol=1e-10)


def test_known_kernel_is_recovered() -> None:
    """Science = reference model convolved with a known Gaussian kernel, times a flux scale.

    The kernel is only determined at the spatial frequencies where the reference has power, so the
    reference is sharp (1.5 px FWHM) and the basis moderate (degrees 4, 2, 2): then the kernel image
    itself, not only its convolution with the reference PSF, is recovered."""
    rng = np.random.default_rng(20)
    shape = (256, 256)
    ref_psf = MoffatPSF(fwhm=1.5, beta=3.0, shape=shape)
    x, y, flux = grid_stars(rng, shape)
    ref_model = np.zeros(shape, np.float32)
    render_points(ref_model, ref_psf, x, y, F_R * flux)
    # one of the basis Gaussians, so that the kernel is exactly representable and any error is the fit's
    true_kernel = gaussian_kernel(1.5, 9) / F_R  # science ADU per reference ADU
    sci_model = ndimage.convolve(ref_model.astype(np.float64), true_kernel, mode="constant").astype(
        np.float32
    )
    ref = exposure_from_model(rng, ref_model, 2.0, ref_psf, ZP_REF, "ref")
    sci = exposure_from_model(rng, sci_model, 4.0, MoffatPSF(fwhm=3.6, beta=3.0, shape=shape), ZP_SCI, "sci")

    fit = AlardLuptonSubtractor(
        kernel_half_size=9, basis_degrees=(4, 2, 2), spatial_order=0, background_order=0
    )
    diff = fit.subtract(sci, ref)
    assert diff.meta["convolved"] == "reference"
    kernel = diff.meta["kernel"].kernel_at(128, 128)
    assert kernel.sum() == pytest.approx(true_kernel.sum(), rel=0.005)
    assert np.abs(kernel - true_kernel).max() < 0.04 * true_kernel.max()
    assert np.sqrt(((kernel - true_kernel) ** 2).sum() / (true_kernel**2).sum()) < 0.03
    inner = diff.image[20:-20, 20:-20] / np.sqrt(diff.variance[20:-20, 20:-20])
    assert np.std(inner) < 1.1


def test_spatially_varying_kernel_is_tracked() -> None:
    """The science PSF widens linearly with x; the fitted kernel must be narrow on the left and
    broad on the right, with the Gaussian widths sqrt(sigma_sci(x)^2 - sigma_ref^2)."""
    rng = np.random.default_rng(21)
    shape = (256, 256)
    ref_psf = MoffatPSF(fwhm=2.2, beta=60.0, shape=shape)  # near-Gaussian: the kernel is a Gaussian
    sci_psf = MoffatPSF(fwhm=3.4, beta=60.0, shape=shape, fwhm_slope=(0.2, 0.0))
    x, y, flux = grid_stars(rng, shape, spacing=24, margin=22)
    ref_model, sci_model = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    render_points(ref_model, ref_psf, x, y, F_R * flux)
    render_points(sci_model, sci_psf, x, y, flux)
    ref = exposure_from_model(rng, ref_model, 2.0, ref_psf, ZP_REF, "ref")
    sci = exposure_from_model(rng, sci_model, 4.0, sci_psf, ZP_SCI, "sci")

    diff = AlardLuptonSubtractor(kernel_half_size=9, spatial_order=1).subtract(sci, ref)
    solution = diff.meta["kernel"]
    to_sigma = 1 / (2 * np.sqrt(2 * np.log(2)))
    for xk in (40.0, 215.0):
        kernel = solution.kernel_at(xk, 128.0)
        u = np.arange(-9, 10)
        width = np.sqrt((kernel * (u[None, :] ** 2 + u[:, None] ** 2)).sum() / (2 * kernel.sum()))
        expected = np.sqrt((sci_psf.fwhm_at(xk, 128.0) * to_sigma) ** 2 - (2.2 * to_sigma) ** 2)
        assert width == pytest.approx(expected, rel=0.05)
        assert kernel.sum() == pytest.approx(1 / F_R, rel=0.01)
    # with the variation fitted, static stars subtract to the noise across the frame
    stars = np.abs(diff.image / np.sqrt(diff.variance))[20:-20, 20:-20]
    assert np.percentile(stars, 99.9) < 5.0


@pytest.mark.parametrize(
    ("convolve", "sci_fwhm", "ref_fwhm"), [("reference", 3.2, 2.2), ("science", 2.2, 3.2)]
)
def test_transient_flux_is_preserved(convolve: str, sci_fwhm: float, ref_fwhm: float) -> None:
    """Bright transients in the science keep their science flux (within 1%) whichever image is
    convolved (the sharper one, chosen automatically), measured by PSF photometry with the
    difference's PSF."""
    sci, ref = star_pair(30, shape=(256, 256), spacing=30, margin=24, sci_fwhm=sci_fwhm, ref_fwhm=ref_fwhm)
    rng = np.random.default_rng(31)
    transients = [(45.0 + 55 * i, 38.0 + 60 * j, 3e4) for i in range(4) for j in range(4)]
    model = np.zeros(sci.shape, np.float32)
    for tx, ty, tf in transients:
        render_points(model, sci.psf, [tx], [ty], [tf])
    sci.image += model + rng.standard_normal(sci.shape).astype(np.float32) * np.sqrt(model.clip(0))
    sci.variance += model

    diff = AlardLuptonSubtractor().subtract(sci, ref)
    assert diff.meta["convolved"] == convolve
    # the science PSF, convolved with the decorrelation filter (and, if the science was convolved,
    # with the matching kernel)
    assert diff.meta["decorrelated"] and diff.psf.base is sci.psf
    ratios, pulls = [], []
    for tx, ty, tf in transients:
        ix, iy = round(tx), round(ty)
        p = ndimage.shift(diff.psf.image_at(tx, ty, 21), (ty - iy, tx - ix), order=3)
        box = (slice(iy - 10, iy + 11), slice(ix - 10, ix + 11))
        w = p / (p * p).sum()
        flux, err = (w * diff.image[box]).sum(), np.sqrt((w * w * diff.variance[box]).sum())
        ratios.append(flux / tf)
        pulls.append((flux - tf) / err)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.01)
    assert np.abs(pulls).max() < 5


def test_no_usable_stars_is_a_clear_error() -> None:
    sci, ref = noise_pair(40, shape=(128, 128))
    with pytest.raises(InvalidExposureError, match=r"^ref: .*no usable stars"):
        AlardLuptonSubtractor().subtract(sci, ref)


def test_too_few_stars_for_the_spatial_order() -> None:
    sci, ref = star_pair(41, shape=(128, 128), spacing=40, margin=30)  # 3 x 3 stars
    with pytest.raises(InvalidExposureError, match=r"^ref: .*has \d usable stars.*but 12 are needed"):
        AlardLuptonSubtractor(spatial_order=2).subtract(sci, ref)
    # a constant kernel and background (2 parameters over space) can be fitted on 4 stars
    AlardLuptonSubtractor(spatial_order=0, background_order=0, min_stars=4).subtract(sci, ref)


def test_all_nan_regions() -> None:
    sci, ref = star_pair(42)
    # no pixel has data in both exposures
    sci.image[:, 112:] = np.nan
    sci.mask[:, 112:] |= Mask.NO_DATA
    ref.image[:, :112] = np.nan
    ref.mask[:, :112] |= Mask.NO_DATA
    with pytest.raises(InvalidExposureError, match="no pixel with data in both"):
        AlardLuptonSubtractor().subtract(sci, ref)
    # data in both only in a star-free corner
    sci, ref = star_pair(42)
    ref.image[16:, :] = np.nan
    ref.mask[16:, :] |= Mask.NO_DATA
    with pytest.raises(InvalidExposureError, match=r"^ref: .*no usable stars"):
        AlardLuptonSubtractor().subtract(sci, ref)
