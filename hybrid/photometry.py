"""Photometry: PSF and aperture fluxes, with errors, on frames and on stamp cubes.

The one place where fluxes are measured; subtraction (stars, PSF estimation, ZOGY's flux ratio),
real frames (zero points), detection features and the subtraction benchmark all call it.

On frames, at sub-pixel positions ``(x, y)`` (0-based pixels, numpy order ``[y, x]``):

* :func:`psf_fluxes` -- the PSF shifted to each position (cubic spline) and fitted as ``f P + b``
  by least squares, ``b`` a local background offset (sky-subtraction error, unresolved light) that
  must not leak into the flux; or as ``f P`` alone (``background=False``), i.e. the PSF-weighted
  flux ``sum(P D) / sum(P^2)``. Errors from the variance plane, pixel correlations neglected. The
  weights are those of a PSF fit without inverse-variance weighting, unbiased whatever the noise
  (Stetson 1987, PASP 99, 191, for the idea of PSF fitting).
* :func:`aperture_fluxes` -- flux in a circle (sep's exact pixel overlap, Barbary 2016, JOSS 1, 58),
  optionally divided by the PSF's own fraction within the circle (aperture correction, Howell 1989,
  PASP 101, 616), i.e. the total flux of a point source.

On stamp cubes ``(N, S, S)`` centred on candidates (forced photometry at the stamp centre):

* :func:`forced_psf_fluxes` -- the inverse-variance weighted (optimal) PSF flux at a fixed position
  (Naylor 1998, MNRAS 296, 339) with its error and reduced chi^2; the measurement of ZTF's
  ``magpsf`` (Masci et al. 2019, PASP 131, 018003);
* :func:`stamp_aperture_fluxes` -- the sum within a circle of whole pixels and its error;
* :func:`windowed_stamp_fluxes` -- fluxes of aligned star stamps through a fixed Gaussian window,
  normalised by the PSF stacked from the same stamps, with a local background from an annulus
  (unbiased by the stacking's interpolation and by the PSF's noise; for estimated PSFs).

Units: fluxes in the image's ADU, errors the same, positions and radii in pixels. A source whose
stamp or aperture touches an invalid pixel, or leaves the frame, gets NaN on frames; on stamps
missing pixels (NaN, zero or negative variance) are left out of the sums.
"""

from __future__ import annotations

import numpy as np
import sep
from scipy import ndimage


def psf_fluxes(
    image: np.ndarray,
    variance: np.ndarray,
    invalid: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    psf: np.ndarray,
    *,
    background: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """PSF fluxes and errors (ADU) at sub-pixel positions ``(x, y)`` (pixels).

    Args:
        image, variance: the frame (ADU) and its variance (ADU^2).
        invalid: boolean map of pixels not to measure on (masked, non-finite).
        x, y: positions (pixels, 0-based).
        psf: the PSF image (unit sum, odd side, centred on its central pixel) or its central part,
            one ``(size, size)`` for all sources or ``(n, size, size)``, one per source; the fit
            returns the flux of the whole unit-sum PSF from the pixels of the part.
        background: fit ``f P + b`` (the error of ``f`` with ``b`` marginalised); ``False``: ``f P``.

    Returns:
        ``(flux, err)``; NaN where the ``size x size`` box leaves the frame or touches ``invalid``.
    """
    data = np.asarray(image, dtype=np.float32)
    ny, nx = data.shape
    kernels = np.broadcast_to(psf, (len(x), *np.shape(psf)[-2:]))
    half = kernels.shape[-1] // 2
    flux = np.full(len(x), np.nan)
    err = np.full(len(x), np.nan)
    for i, (xs, ys) in enumerate(zip(x, y, strict=True)):
        ix, iy = int(np.rint(xs)), int(np.rint(ys))
        if ix - half < 0 or iy - half < 0 or ix + half >= nx or iy + half >= ny:
            continue
        box = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        if invalid[box].any():
            continue
        p = ndimage.shift(kernels[i], (ys - iy, xs - ix), order=3, mode="constant")
        if background:
            design = np.column_stack([p.ravel(), np.ones(p.size)])
            cov = np.linalg.inv(design.T @ design)
            flux[i] = (cov @ (design.T @ data[box].ravel().astype(np.float64)))[0]
            weights = cov[0] @ design.T
            err[i] = np.sqrt((weights**2 * variance[box].ravel()).sum())
        else:
            w = p / (p * p).sum()
            flux[i] = float((w * data[box]).sum())
            err[i] = float(np.sqrt((w * w * variance[box]).sum()))
    return flux, err


def aperture_fluxes(
    image: np.ndarray,
    variance: np.ndarray,
    invalid: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    radius: float,
    *,
    psf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fluxes and errors (ADU) in circles of ``radius`` pixels at ``(x, y)`` (pixels).

    Args:
        image, variance, invalid: as for :func:`psf_fluxes`.
        x, y: aperture centres (pixels, 0-based).
        radius: aperture radius (pixels).
        psf: unit-sum PSF image(s) centred on the central pixel, ``(size, size)`` or one per source
            ``(n, size, size)``: fluxes and errors are divided by the PSF's fraction within the
            aperture (aperture correction). ``None``: the flux within the aperture.

    Returns:
        ``(flux, err)``; the flux is NaN where the aperture (grown by one pixel) touches ``invalid``
        or leaves the frame.
    """
    data = np.ascontiguousarray(np.where(invalid, 0.0, image), dtype=np.float32)
    var = np.where(invalid, 0.0, variance).astype(np.float32)
    x, y = np.asarray(x, float), np.asarray(y, float)
    flux, err, _ = sep.sum_circle(data, x, y, radius, var=var)
    bad, _, _ = sep.sum_circle(invalid.astype(np.float32), x, y, radius + 1.0)
    ny, nx = data.shape
    outside = (x - radius < 0) | (y - radius < 0) | (x + radius > nx - 1) | (y + radius > ny - 1)
    flux = np.where((bad > 0) | outside, np.nan, flux)
    if psf is None:
        return flux, np.asarray(err)
    fraction = psf_fraction(psf, radius)
    return flux / fraction, np.asarray(err) / fraction


def psf_fraction(psf: np.ndarray, radius: float) -> np.ndarray | float:
    """Fraction of unit-sum PSF image(s) ``(size, size)`` or ``(n, size, size)`` within ``radius``
    pixels of the central pixel (one value, or one per image)."""
    c = float(psf.shape[-1] // 2)
    images = np.reshape(psf, (-1, *psf.shape[-2:]))
    fractions = np.array(
        [sep.sum_circle(np.ascontiguousarray(p, dtype=np.float64), [c], [c], radius)[0][0] for p in images]
    )
    return fractions if psf.ndim == 3 else float(fractions[0])


def _usable(stamps: np.ndarray, variances: np.ndarray) -> np.ndarray:
    return np.isfinite(stamps) & np.isfinite(variances) & (variances > 0)


#: How a survey's pipeline weighs the pixels of a candidate's PSF fit and states its error
#: (``hybrid.detection.features.measure_stamps``).
PSF_FIT_ERRORS = ("variance", "background_chi2")


def forced_psf_fluxes(
    stamps: np.ndarray, variances: np.ndarray, psf: np.ndarray, *, background_chi2: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal PSF flux at the centre of each stamp: ``sum(P D / V) / sum(P^2 / V)``.

    Args:
        stamps, variances: ``(N, K, K)`` cutouts (ADU) and their variance (ADU^2), centred on the
            sources, the same size as ``psf``; NaN pixels and pixels of zero variance are left out.
        psf: ``(K, K)`` unit-sum PSF centred on the central pixel, or ``(N, K, K)``: each stamp's own.
        background_chi2: ``variances`` hold each stamp's background level only (ZTF's convention):
            chi^2 is then weighted by the PSF (the core the fit relies on; 1 on pure background) and
            the error scaled by ``sqrt(max(chi^2, 1))``, so the photons of a bright star under the
            source and any subtraction residual inflate it. Otherwise chi^2 is per pixel.

    Returns:
        ``(flux, err, chi2)``: fluxes and errors (ADU) and the reduced chi^2 of the fit.
    """
    good = _usable(stamps, variances)
    d0 = np.where(good, stamps, 0.0)
    w = np.where(good, 1.0 / np.where(good, variances, 1.0), 0.0)
    p = psf if psf.ndim == 3 else psf[None]
    denom = (p * p * w).sum(axis=(1, 2))
    flux = (p * d0 * w).sum(axis=(1, 2)) / np.maximum(denom, 1e-30)
    flux_err = 1.0 / np.sqrt(np.maximum(denom, 1e-30))
    resid = (d0 - flux[:, None, None] * p) ** 2 * w
    if background_chi2:
        chi2 = (resid * p).sum(axis=(1, 2)) / np.maximum((p * good).sum(axis=(1, 2)), 1e-30)
        return flux, flux_err * np.sqrt(np.maximum(chi2, 1.0)), chi2
    chi2 = resid.sum(axis=(1, 2)) / np.maximum(good.sum(axis=(1, 2)) - 1, 1)
    return flux, flux_err, chi2


def stamp_aperture_fluxes(
    stamps: np.ndarray, variances: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sum (ADU) of the whole pixels within ``radius`` pixels of each stamp's central pixel and its
    error; missing pixels count as zero (no aperture correction)."""
    k = stamps.shape[-1] // 2
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    ap = xx * xx + yy * yy <= radius**2
    good = _usable(stamps, variances)
    flux = (np.where(good, stamps, 0.0) * ap).sum(axis=(1, 2))
    var = (np.where(good, variances, 0.0) * ap).sum(axis=(1, 2))
    return flux, np.sqrt(np.maximum(var, 1e-30))


def windowed_stamp_fluxes(
    stamps: np.ndarray, variances: np.ndarray, psf: np.ndarray, *, fwhm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fluxes and errors of centred star ``stamps`` (from
    :func:`hybrid.subtraction.psf_estimation.aligned_stamps`) whose PSF ``psf`` (unit sum, same size)
    was stacked from them.

    Each stamp is modelled as ``f psf + b`` and measured through a fixed Gaussian window ``W`` of the
    given FWHM (pixels) and the mean over an annulus ``A`` of 2.5 to 4 FWHM:
    ``sum(W S) = f sum(W psf) + b sum(W)`` and ``mean_A(S) = f mean_A(psf) + b``, solved for ``f``.
    Measuring the stamps the PSF was stacked from gives fluxes and PSF the same interpolation, so its
    broadening does not bias them; the estimator is linear in ``psf``, so the PSF's noise does not
    bias it either (a PSF-weighted fit would underestimate the flux of the noisier exposure by its
    PSF's noise power); and ``b`` absorbs the residual background of each stamp.
    """
    side = stamps.shape[1]
    u = np.arange(side) - side // 2
    r = np.hypot(u[None, :], u[:, None])
    window = np.exp(-0.5 * (r / (fwhm / 2.3548)) ** 2)
    annulus = (r >= 2.5 * fwhm) & (r <= 4.0 * fwhm)
    if annulus.sum() < 8:  # a small stamp: the outermost ring
        annulus = r >= r.max() - 2.0
    a_w = (window * psf).sum() - psf[annulus].mean() * window.sum()
    flux = ((stamps * window).sum(axis=(1, 2)) - stamps[:, annulus].mean(axis=1) * window.sum()) / a_w
    # error: the window term (the annulus mean averages many pixels and is neglected)
    err = np.sqrt((variances * window**2).sum(axis=(1, 2))) / a_w
    return flux, err


__all__ = [
    "aperture_fluxes",
    "forced_psf_fluxes",
    "psf_fluxes",
    "psf_fraction",
    "stamp_aperture_fluxes",
    "windowed_stamp_fluxes",
]
