"""ZOGY: the proper image subtraction of Zackay, Ofek & Gal-Yam (2016, ApJ 830, 27; "ZOGY16" below).

Notation follows the paper. ``N`` is the new (science) image and ``R`` the reference, on one pixel
grid and background subtracted; ``P_n``, ``P_r`` their unit-sum PSFs; ``sigma_n``, ``sigma_r`` their
background noise (ADU of each image); ``F_n``, ``F_r`` their flux zero points, i.e. a source of true
flux ``T`` has total flux ``F_n T`` in ``N`` and ``F_r T`` in ``R``. Fluxes are measured in the
science image's units, so ``F_n = 1`` and ``F_r`` is the reference ADU of one science ADU: from the
zero points, ``10**(0.4 (zp_ref - zp_sci))``, or fitted on the frames' stars (``flux_ratio="fit"``).
A hat denotes the 2-D discrete Fourier transform and ``⊗`` convolution. The equation numbers were
checked against the implementations that cite them: LSST ``ip_diffim``'s ``zogy.py`` (eq. 12 for S,
13 for D, 14 for P_D, 25 for S_corr's denominator, 26-29 for the source-noise kernels) and
Vreeswijk's ZOGY for MeerLICHT/BlackGEM (eqs. 25-31 for the corrections). Eq. 12 is S in closed
form in terms of N and R; ``S = F_D D ⊗ flip(P_D)`` is the same statistic written with D.

* eq. 12  ``S_hat = (F_n F_r^2 conj(P_n_hat) |P_r_hat|^2 N_hat - F_r F_n^2 conj(P_r_hat) |P_n_hat|^2
  R_hat) / denom^2`` -- the optimal transient-detection statistic, ``S = S_N - S_R`` with
  ``S_N = k_n ⊗ N``, ``S_R = k_r ⊗ R`` (kernels of eqs. 28-29); it equals ``F_D D ⊗ flip(P_D)``;
* eq. 13  ``D_hat = (F_r P_r_hat N_hat - F_n P_n_hat R_hat) / denom`` with ``denom = sqrt(sigma_n^2
  F_r^2 |P_r_hat|^2 + sigma_r^2 F_n^2 |P_n_hat|^2)`` -- the difference image, white noise of unit
  variance for background-limited images;
* eq. 14  ``P_D_hat = F_r F_n P_r_hat P_n_hat / (F_D denom)`` -- its PSF (unit sum);
* eq. 15  ``F_D = F_r F_n / sqrt(sigma_n^2 F_r^2 + sigma_r^2 F_n^2)`` -- its flux zero point, so that
  a transient of science flux ``f`` appears in ``D`` as ``F_D f P_D``;
* eqs. 26-27  ``V(S_N) = V_N ⊗ k_n^2``, ``V(S_R) = V_R ⊗ k_r^2`` with the exposures' full variance
  images (background and source noise), so that bright stars do not pass as transients;
* eqs. 28-29  ``k_r_hat = F_r F_n^2 conj(P_r_hat) |P_n_hat|^2 / denom^2``,
  ``k_n_hat = F_n F_r^2 conj(P_n_hat) |P_r_hat|^2 / denom^2``;
* eqs. 30-31  ``V_ast(S_N) = sigma_x^2 (dS_N/dx)^2 + sigma_y^2 (dS_N/dy)^2`` (and the same for
  ``S_R``) for a registration error of rms ``(sigma_x, sigma_y)`` pixels (ZOGY16 section 3.3);
* eq. 25  ``S_corr = S / sqrt(V(S_N) + V(S_R) + V_ast(S_N) + V_ast(S_R))`` -- the corrected score,
  Gaussian of unit variance on empty sky (exactly so for white noise without the astrometric term).

The returned :class:`~hybrid.exposure.Difference` holds ``D / F_D``: science ADU, so a transient of
science flux ``f`` has total flux ``f`` in it with PSF ``P_D``. Its variance is propagated per pixel
from the input variance images through the linear map ``D = k_Dn ⊗ N - k_Dr ⊗ R`` (``k_Dn_hat =
F_r P_r_hat / denom``, ``k_Dr_hat = F_n P_n_hat / denom``): ``(V_N ⊗ k_Dn^2 + V_R ⊗ k_Dr^2) / F_D^2``
(ADU^2). Its ``score`` is ``S_corr`` (dimensionless, in units of its own noise).

What real frames need, beyond the paper's single-PSF, known-zero-point set-up (defaults keep that
set-up):

* ``psf="estimate"``: ``P_n``, ``P_r`` are stacked from the frames' own bright, isolated stars
  (:func:`hybrid.subtraction.psf_estimation.estimate_psf`) instead of the exposures' PSF models;
* ``flux_ratio="fit"``: ``F_r / F_n`` is the robust mean flux ratio of those stars' fluxes
  (PSF-fit fluxes with a local background by default, or aperture-corrected aperture fluxes;
  :func:`hybrid.subtraction.psf_estimation.fit_flux_ratio`) instead of the zero points;
* ``tiles=k``: the frame is processed as ``k x k`` sub-images grown by ``tile_overlap`` pixels
  (:mod:`hybrid.subtraction.tiling`), each with its own PSFs (the model at the tile centre, or the
  stars in the grown tile) and noise levels, and the tiles' cores are stitched; the difference PSF is
  then a :class:`~hybrid.subtraction.tiling.TiledPSF`;
* ``registration="estimate"``: a residual sub-pixel misregistration, fitted as an affine field of
  the stars' centroid offsets, is put into ``P_r`` (per tile) instead of leaving dipoles;
* ``background="constant"``: a constant differential background per (sub-)image, the zeroth-order
  term of Alard & Lupton's background fit;
* ``few_stars="fallback"``: a frame with too few usable stars for a star-based estimate falls back to
  the PSF models, the zero points, no offset and no astrometric term, recorded in ``meta``.

Within one (sub-)image convolutions are circular FFTs over the image zero-padded by ``pad`` pixels,
so sources near one edge do not wrap onto the other.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.fft as sfft
from scipy import ndimage

from hybrid.exposure import Difference, Exposure, InvalidExposureError, Mask, adu_ratio, check_aligned
from hybrid.photometry import aperture_fluxes, psf_fluxes, windowed_stamp_fluxes
from hybrid.psf import ImagePSF
from hybrid.stats import MAD_TO_SIGMA, mad_sigma
from hybrid.subtraction import SUBTRACTORS, Subtractor
from hybrid.subtraction.psf_estimation import aligned_stamps, centroids, estimate_psf, fit_flux_ratio
from hybrid.subtraction.stars import StarSelection, require_stars, select_stars, unusable_pixels
from hybrid.subtraction.tiling import Tile, TiledPSF, make_tiles, tile_edges

log = logging.getLogger(__name__)


def check_background(science: Exposure, reference: Exposure) -> None:
    """Subtraction needs both skies removed; say which exposure still has its sky."""
    for role, exp in (("science", science), ("reference", reference)):
        if not exp.background_subtracted:
            raise InvalidExposureError(
                f"{role} {exp.source}: field 'background_subtracted' is False; subtract the sky first"
            )


def embed_kernel(kernel: np.ndarray, shape: tuple[int, int], dtype: type = np.float32) -> np.ndarray:
    """Place an odd-size centred kernel in an array of ``shape`` with its centre at ``[0, 0]``.

    This is the zero-padded ``ifftshift`` of the kernel: the layout under which a circular FFT
    convolution does not shift the image.
    """
    ky, kx = kernel.shape
    out = np.zeros(shape, dtype=dtype)
    iy = (np.arange(ky) - ky // 2) % shape[0]
    ix = (np.arange(kx) - kx // 2) % shape[1]
    out[np.ix_(iy, ix)] = kernel
    return out


def crop_kernel(array: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`embed_kernel`: the centred ``size x size`` stamp around ``[0, 0]``."""
    iy = (np.arange(size) - size // 2) % array.shape[0]
    ix = (np.arange(size) - size // 2) % array.shape[1]
    return array[np.ix_(iy, ix)]


def _robust_sigma(image: np.ndarray, variance: np.ndarray, valid: np.ndarray, method: str) -> float:
    if method == "variance":
        return float(np.sqrt(np.median(variance[valid])))
    return mad_sigma(image[valid].astype(np.float64))


def robust_sigma(exp: Exposure, valid: np.ndarray, method: str) -> float:
    """Background noise (ADU) of an exposure from its valid pixels.

    ``"variance"``: ``sqrt(median(variance))``; ``"mad"``: 1.4826 x the median absolute deviation
    of the image (insensitive to the sources on top of the background).
    """
    return _robust_sigma(exp.image, exp.variance, valid, method)


@dataclass
class ProperDifference:
    """ZOGY outputs on one (sub-)image: ``D / F_D`` (science ADU), its variance, ``S_corr``, ``P_D``."""

    image: np.ndarray
    variance: np.ndarray
    score: np.ndarray
    psf: np.ndarray
    f_d: float
    background: float = 0.0


def proper_subtraction(
    new: np.ndarray,
    ref: np.ndarray,
    var_new: np.ndarray,
    var_ref: np.ndarray,
    psf_new: np.ndarray,
    psf_ref: np.ndarray,
    *,
    sigma_n: float,
    sigma_r: float,
    f_n: float,
    f_r: float,
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
    pad: int = 0,
    valid: np.ndarray | None = None,
) -> ProperDifference:
    """ZOGY16 eqs. 12-15 and 25-31 on one image pair with one PSF each (see the module docstring).

    Inputs are float32 images with missing pixels already set to zero; the PSFs are odd, equal-size,
    unit-sum images. ``valid``: the pixels with data (boolean, input shape); when given, a constant
    differential background ``b`` of ``N`` is removed: ``b`` is the constant that leaves ``D`` with
    a zero median over ``valid``, and its response (``b`` convolved with the kernels over the valid
    pixels) is subtracted from ``D`` and ``S``.
    Returns float32 planes of the input shape.
    """
    ny, nx = new.shape
    size = psf_new.shape[0]
    shape = (sfft.next_fast_len(ny + pad, real=True), sfft.next_fast_len(nx + pad, real=True))

    def fft(array: np.ndarray) -> np.ndarray:
        return sfft.rfft2(array, s=shape, workers=1)

    def ifft(array: np.ndarray) -> np.ndarray:
        return sfft.irfft2(array, s=shape, workers=1)

    n_hat = fft(new)
    r_hat = fft(ref)
    vn_hat = fft(var_new)
    vr_hat = fft(var_ref)
    pn_hat = fft(embed_kernel(psf_new, shape))
    pr_hat = fft(embed_kernel(psf_ref, shape))

    # eq. 13 denominator; the floor only guards an exact 0/0 where both PSF transforms vanish
    a = np.float32((sigma_n * f_r) ** 2)
    b = np.float32((sigma_r * f_n) ** 2)
    abs_pn2 = pn_hat.real**2 + pn_hat.imag**2
    abs_pr2 = pr_hat.real**2 + pr_hat.imag**2
    denom2 = a * abs_pr2 + b * abs_pn2
    np.maximum(denom2, np.float32(1e-30) * (a + b), out=denom2)
    denom = np.sqrt(denom2)

    f_d = f_r * f_n / math.sqrt(sigma_n**2 * f_r**2 + sigma_r**2 * f_n**2)  # eq. 15

    # eq. 13 as two convolution kernels: D = k_Dn ⊗ N - k_Dr ⊗ R
    kdn_hat = np.float32(f_r) * pr_hat / denom
    kdr_hat = np.float32(f_n) * pn_hat / denom
    d = ifft(kdn_hat * n_hat - kdr_hat * r_hat)[:ny, :nx]

    # eq. 14: the PSF of D, unit sum by construction (P_n_hat(0) = P_r_hat(0) = 1)
    p_d_hat = np.float32(f_r * f_n / f_d) * pr_hat * pn_hat / denom
    p_d = crop_kernel(ifft(p_d_hat), size).astype(np.float64)
    p_d /= p_d.sum()

    # eqs. 28-29 kernels; S = S_N - S_R is eq. 12 (= F_D D ⊗ flip(P_D))
    kn_hat = np.float32(f_n * f_r**2) * np.conj(pn_hat) * (abs_pr2 / denom2)
    kr_hat = np.float32(f_r * f_n**2) * np.conj(pr_hat) * (abs_pn2 / denom2)
    sn_hat = kn_hat * n_hat
    sr_hat = kr_hat * r_hat
    sig_x, sig_y = astrometric_sigma
    astrometric = sig_x > 0 or sig_y > 0
    if astrometric:
        s_n = ifft(sn_hat)[:ny, :nx]
        s_r = ifft(sr_hat)[:ny, :nx]
        s = s_n - s_r
    else:
        s = ifft(sn_hat - sr_hat)[:ny, :nx]

    # eqs. 26-27: V(S_N) + V(S_R) = V_N ⊗ k_n^2 + V_R ⊗ k_r^2; likewise the variance of D
    def squared_hat(kernel_hat: np.ndarray) -> np.ndarray:
        k = ifft(kernel_hat)
        return fft(k * k)

    background = 0.0
    if valid is not None and valid.any():
        # the constant b in N (science ADU) that leaves D with a zero median: D's response to b on
        # the valid pixels is b (k_Dn ⊗ valid), k_Dn_hat(0) b in the interior
        c = float(np.median(d[valid]))
        background = c / float(kdn_hat[0, 0].real)
        u_hat = fft(valid.astype(np.float32))
        d -= np.float32(background) * ifft(kdn_hat * u_hat)[:ny, :nx]
        if astrometric:
            s_n -= np.float32(background) * ifft(kn_hat * u_hat)[:ny, :nx]
            s = s_n - s_r
        else:
            s -= np.float32(background) * ifft(kn_hat * u_hat)[:ny, :nx]

    v_s = ifft(squared_hat(kn_hat) * vn_hat + squared_hat(kr_hat) * vr_hat)[:ny, :nx]
    v_d = ifft(squared_hat(kdn_hat) * vn_hat + squared_hat(kdr_hat) * vr_hat)[:ny, :nx]
    # FFT round-off can leave tiny negative values where the variance is ~0 (padding, NO_DATA)
    tiny = np.float32(1e-12) * np.float32(max(sigma_n, sigma_r) ** 2)
    np.maximum(v_s, tiny, out=v_s)
    np.maximum(v_d, tiny, out=v_d)

    if astrometric:  # eqs. 30-31; np.gradient returns d/dy (axis 0) first
        for s_x in (s_n, s_r):
            gy, gx = np.gradient(s_x)
            v_s += np.float32(sig_x**2) * gx * gx + np.float32(sig_y**2) * gy * gy

    return ProperDifference(
        image=(d * np.float32(1.0 / f_d)).astype(np.float32, copy=False),
        variance=(v_d * np.float32(1.0 / f_d**2)).astype(np.float32, copy=False),
        score=(s / np.sqrt(v_s)).astype(np.float32, copy=False),  # eq. 25
        psf=p_d,
        f_d=f_d,
        background=background,
    )


def registration_offsets(science: Exposure, stars: pd.DataFrame) -> pd.DataFrame:
    """Per-star registration offsets (pixels): the science's windowed centroids minus the reference's
    (``stars`` holds the reference's), for the stars with S/N >= 50 where at least 5 have it
    (centroid noise ~ FWHM / S/N would otherwise dominate). Columns ``x``, ``y``, ``dx``, ``dy``."""
    fwhm = float(stars.attrs.get("fwhm", 3.0))
    bright = stars[stars["snr"] >= 50.0]
    stars = bright if len(bright) >= 5 else stars
    xr, yr = stars["x"].to_numpy(), stars["y"].to_numpy()
    xs, ys = centroids(science, xr, yr, fwhm)
    return pd.DataFrame({"x": xr, "y": yr, "dx": xs - xr, "dy": ys - yr})


def shift_kernel(kernel: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``kernel`` moved by ``(dx, dy)`` pixels (Fourier shift), renormalised to unit sum."""
    moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(kernel), (dy, dx))).real
    return moved / moved.sum()


def registration_model(
    offsets: pd.DataFrame, shape: tuple[int, int], *, min_plane: int = 10, clip: float = 3.0
) -> tuple[Callable[[float, float], tuple[float, float]], tuple[float, float]]:
    """Affine model of the registration offsets across the frame, and the scatter about it.

    Per axis, ``d = a0 + a1 u + a2 v`` with ``u = x / nx - 1/2``, ``v = y / ny - 1/2`` (a shift plus
    the gradient of a small rotation or scale error; a constant with fewer than ``min_plane``
    stars), fitted by least squares with ``clip``-sigma rejection. Returns ``predict(x, y) -> (dx,
    dy)`` (pixels) and the robust standard deviation (pixels) of the residuals per axis.
    """
    ny, nx = shape
    u = offsets["x"].to_numpy() / nx - 0.5
    v = offsets["y"].to_numpy() / ny - 0.5
    design = np.column_stack([np.ones_like(u), u, v]) if len(offsets) >= min_plane else np.ones((len(u), 1))
    coefs, sigmas = [], []
    for d in (offsets["dx"].to_numpy(), offsets["dy"].to_numpy()):
        keep = np.ones(len(d), bool)
        for _ in range(5):
            coef = np.linalg.lstsq(design[keep], d[keep], rcond=None)[0]
            resid = d - design @ coef
            sigma = MAD_TO_SIGMA * float(np.median(np.abs(resid[keep])))
            new = np.abs(resid) <= clip * max(sigma, 1e-3)
            if new.sum() < design.shape[1] or np.array_equal(new, keep):
                break
            keep = new
        coefs.append(np.pad(coef, (0, 3 - len(coef))))
        sigmas.append(sigma)

    def predict(x: float, y: float) -> tuple[float, float]:
        basis = np.array([1.0, x / nx - 0.5, y / ny - 0.5])
        return float(basis @ coefs[0]), float(basis @ coefs[1])

    return predict, (sigmas[0], sigmas[1])


def registration_rms(science: Exposure, stars: pd.DataFrame) -> tuple[float, float]:
    """Registration error (pixels) per axis from the stars' centroids: ``stars`` holds the reference's
    windowed centroids; the science's are measured here. ``sqrt(median^2 + robust sigma^2)`` of the
    offsets, so a global shift and a scatter both count."""
    offsets = registration_offsets(science, stars)
    out = []
    for d in (offsets["dx"].to_numpy(), offsets["dy"].to_numpy()):
        med = float(np.median(d))
        out.append(math.hypot(med, MAD_TO_SIGMA * float(np.median(np.abs(d - med)))))
    return out[0], out[1]


@SUBTRACTORS.register("zogy")
class ZOGYSubtractor(Subtractor):
    """Proper image subtraction (ZOGY16): difference ``D / F_D``, its PSF ``P_D`` and ``S_corr``.

    Args:
        psf_size: odd side (pixels) of the PSF stamps taken from the exposures and of the
            difference PSF. ``None``: ``max(31, 2 round(4 FWHM) + 1)`` of the broader PSF, clipped
            to the image (and to the tiles).
        noise: how ``sigma_n``, ``sigma_r`` are estimated: ``"variance"`` (square root of the median
            of the variance image) or ``"mad"`` (robust std of the image pixels).
        astrometric_sigma: rms registration error (pixels), a float for both axes or ``(sigma_x,
            sigma_y)``; adds the astrometric-noise terms of ZOGY16 eqs. 30-31 to the variance of S.
            ``"estimate"``: per axis ``sqrt(median(d)^2 + sigma(d)^2)`` of the offsets ``d`` between
            the stars' windowed centroids in the two exposures (robust sigma), as Vreeswijk's ZOGY
            does for MeerLICHT/BlackGEM; with ``registration="estimate"`` only the robust scatter
            of the offsets about the fitted registration model, which is what remains after it.
        pad: zeros (pixels) appended to each axis before the FFTs so that convolutions do not
            wrap around; ``None``: ``psf_size``. The padded size is rounded up to a fast FFT length.
            ``0`` gives purely circular convolution.
        psf: ``"model"`` (the exposures' PSF models) or ``"estimate"`` (stacked from the frames' own
            stars, per tile).
        flux_ratio: ``"zero_point"`` (``F_r`` from the zero points) or ``"fit"`` (from the PSF
            fluxes of stars matched in both frames).
        tiles: sub-images per side (1: the whole frame at once).
        min_tile_size: fewer tiles per side where ``tiles`` would make tiles smaller than this
            (pixels): on small frames tiny tiles cost more than the PSF varies across them.
        tile_overlap: pixels each tile is grown by on every side; ``None``: ``psf_size``.
        psf_stack: ``"median"`` or ``"mean"`` stacking of star stamps for ``psf="estimate"``.
        flux_ratio_photometry: the stars' fluxes for ``flux_ratio="fit"``: ``"psf"`` (PSF and local
            background fitted on the PSF core; biased only by the PSF's shape error) or
            ``"aperture"`` (3 FWHM, aperture-corrected with each exposure's PSF; insensitive to the
            PSF's shape but not to sky-subtraction errors, which in crowded fields dominate).
        min_stars: fewest stars for a PSF estimate or flux-ratio fit.
        max_stars: at most this many stars (brightest, spread over the frame).
        star_snr_min: minimum aperture S/N of a star in both exposures.
        tile_min_stars: a tile's own PSF estimate needs this many stars in
            the grown tile, else the whole frame's is used: a PSF stacked from a handful of stars is
            noisy, and ZOGY spreads that noise, scaled by each star's flux, over every bright star's
            footprint.
        background: ``"constant"``: remove a constant differential background per (sub-)image, the
            constant of ``N`` that leaves ``D`` with a zero median (the zeroth-order term of
            Alard-Lupton's background fit: in crowded fields the two skies are estimated under
            different amounts of unresolved light, ~0.15 sigma here, which biases aperture fluxes of
            transients by several per cent); ``"none"``: the paper's set-up.
        registration: ``"estimate"``: the offsets between the stars' windowed centroids in the two
            exposures are fitted by an affine model across the frame (:func:`registration_model`:
            a shift and its gradient, as left by a small rotation or scale error), and the model's
            offset at each tile's centre is put into ``P_r`` by a Fourier shift, so a residual
            sub-pixel misregistration is matched instead of leaving a dipole at every star; the
            output stays on the science grid. ``"none"``: the images are taken as registered.
            Estimated PSFs carry the offset already (both are stacked at the reference's
            centroids), so this applies to ``psf="model"``.
        few_stars: what a star-based estimate does when a frame has fewer than ``min_stars``
            usable stars: ``"fallback"`` uses the configured alternative (the PSF models, the zero
            points, no registration offset, no astrometric-noise term) and records it in
            ``meta["fallbacks"]`` with a warning; ``"error"`` raises
            :class:`~hybrid.exposure.InvalidExposureError`.
    """

    def __init__(
        self,
        psf_size: int | None = None,
        noise: Literal["variance", "mad"] = "variance",
        astrometric_sigma: float | tuple[float, float] | Literal["estimate"] = 0.0,
        pad: int | None = None,
        psf: Literal["model", "estimate"] = "model",
        flux_ratio: Literal["zero_point", "fit"] = "zero_point",
        tiles: int = 1,
        min_tile_size: int = 128,
        tile_overlap: int | None = None,
        psf_stack: Literal["median", "mean"] = "median",
        flux_ratio_photometry: Literal["aperture", "psf"] = "psf",
        min_stars: int = 5,
        max_stars: int = 200,
        star_snr_min: float = 20.0,
        tile_min_stars: int = 25,
        background: Literal["constant", "none"] = "constant",
        registration: Literal["none", "estimate"] = "none",
        few_stars: Literal["fallback", "error"] = "fallback",
    ) -> None:
        if psf_size is not None and (psf_size < 3 or psf_size % 2 == 0):
            raise ValueError(f"psf_size must be an odd integer >= 3, got {psf_size}")
        if noise not in ("variance", "mad"):
            raise ValueError(f"noise must be 'variance' or 'mad', got {noise!r}")
        self.estimate_astrometry = isinstance(astrometric_sigma, str)
        if self.estimate_astrometry and astrometric_sigma != "estimate":
            raise ValueError(
                f"astrometric_sigma must be a number, a pair or 'estimate', got {astrometric_sigma!r}"
            )
        sig = np.broadcast_to(
            np.asarray(0.0 if self.estimate_astrometry else astrometric_sigma, dtype=float), (2,)
        )
        if np.any(sig < 0) or not np.all(np.isfinite(sig)):
            raise ValueError(f"astrometric_sigma must be finite and >= 0, got {astrometric_sigma}")
        if pad is not None and pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        if psf not in ("model", "estimate"):
            raise ValueError(f"psf must be 'model' or 'estimate', got {psf!r}")
        if flux_ratio not in ("zero_point", "fit"):
            raise ValueError(f"flux_ratio must be 'zero_point' or 'fit', got {flux_ratio!r}")
        if int(tiles) < 1:
            raise ValueError(f"tiles must be >= 1, got {tiles}")
        if int(min_tile_size) < 1:
            raise ValueError(f"min_tile_size must be >= 1, got {min_tile_size}")
        if tile_overlap is not None and tile_overlap < 0:
            raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")
        if flux_ratio_photometry not in ("aperture", "psf"):
            raise ValueError(
                f"flux_ratio_photometry must be 'aperture' or 'psf', got {flux_ratio_photometry!r}"
            )
        if psf_stack not in ("median", "mean"):
            raise ValueError(f"psf_stack must be 'median' or 'mean', got {psf_stack!r}")
        if background not in ("constant", "none"):
            raise ValueError(f"background must be 'constant' or 'none', got {background!r}")
        if registration not in ("none", "estimate"):
            raise ValueError(f"registration must be 'none' or 'estimate', got {registration!r}")
        if few_stars not in ("fallback", "error"):
            raise ValueError(f"few_stars must be 'fallback' or 'error', got {few_stars!r}")
        self.psf_size = psf_size
        self.noise = noise
        self.astrometric_sigma = (float(sig[0]), float(sig[1]))
        self.pad = pad
        self.psf = psf
        self.flux_ratio = flux_ratio
        self.tiles = int(tiles)
        self.min_tile_size = int(min_tile_size)
        self.tile_overlap = tile_overlap
        self.psf_stack = psf_stack
        self.flux_ratio_photometry = flux_ratio_photometry
        self.min_stars = int(min_stars)
        self.max_stars = int(max_stars)
        self.star_snr_min = float(star_snr_min)
        self.tile_min_stars = int(tile_min_stars)
        self.background = background
        self.registration = registration
        self.few_stars = few_stars

    def _per_side(self, shape: tuple[int, int]) -> int:
        """Tiles per side: ``tiles``, fewer where tiles would be smaller than ``min_tile_size``."""
        return max(1, min(self.tiles, min(shape) // self.min_tile_size))

    def _psf_size(self, science: Exposure, reference: Exposure, cx: float, cy: float) -> int:
        ny, nx = science.shape
        fwhm = max(science.psf.fwhm_at(cx, cy), reference.psf.fwhm_at(cx, cy))
        size = self.psf_size if self.psf_size is not None else max(31, 2 * round(4 * fwhm) + 1)
        limit = min(ny, nx) // self._per_side(science.shape)
        limit -= 1 - limit % 2  # largest odd size that fits a tile
        return max(3, min(size, limit))

    def _stars(self, science: Exposure, reference: Exposure, size: int) -> pd.DataFrame:
        """Point-like, isolated stars with clean PSF-sized stamps in both exposures, and centroids."""
        selection = StarSelection(
            snr_min=self.star_snr_min,
            max_stars=self.max_stars,
            isolation_radius=size / 4,
            isolation_contrast=0.05,
            point_like=True,
            cells=4,
            snr_in_all=True,
        )
        stars = select_stars(reference, [science], half_size=size // 2 + 3, selection=selection)
        if len(stars):
            # windows (centroid, photometry) scale with sep's size of the stars, which in these
            # undersampled frames works better than the PSF models' FWHM (see the benchmark)
            fwhm = 2.0 * float(np.median(stars["r50"]))
            stars["x"], stars["y"] = centroids(reference, stars["x"].to_numpy(), stars["y"].to_numpy(), fwhm)
            # a centroid can move a star by a pixel: keep only stars whose aligned stamp (with its
            # 3-pixel margin) still fits, so every star has a stamp in both exposures
            ny, nx = reference.shape
            reach = size // 2 + 3
            ix, iy = np.rint(stars["x"]).astype(int), np.rint(stars["y"]).astype(int)
            fits = (ix >= reach) & (iy >= reach) & (ix < nx - reach) & (iy < ny - reach)
            stars = stars[fits.to_numpy()].reset_index(drop=True)
            stars.attrs["fwhm"] = fwhm
        return stars

    def _tile_psfs(
        self,
        tiles: list[Tile],
        science: Exposure,
        reference: Exposure,
        stars: pd.DataFrame | None,
        size: int,
        mode: str,
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int]]:
        """``(P_n, P_r)`` for every tile, and the number of stars each estimate used (0: model)."""
        if mode == "model":
            out = []
            for tile in tiles:
                x, y = tile.centre
                out.append((science.psf.image_at(x, y, size), reference.psf.image_at(x, y, size)))
            return out, [0] * len(tiles)
        assert stars is not None
        require_stars(stars, self.min_stars, reference, "PSF estimation")
        fwhm = stars.attrs.get("fwhm", science.psf.fwhm_at(*tiles[0].centre))

        def both(subset: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            kwargs = {"fwhm": fwhm, "stack": self.psf_stack, "min_stars": self.min_stars, "recentre": False}
            return estimate_psf(science, subset, size, **kwargs), estimate_psf(
                reference, subset, size, **kwargs
            )

        whole = both(stars)
        if len(tiles) == 1:
            return [whole], [len(stars)]
        out, used = [], []
        xs, ys = stars["x"].to_numpy(), stars["y"].to_numpy()
        for tile in tiles:
            inside = stars[tile.contains(xs, ys, outer=True)]
            if len(inside) >= max(self.min_stars, self.tile_min_stars):
                out.append(both(inside))
                used.append(len(inside))
            else:  # too few stars in this tile: the whole frame's estimate
                out.append(whole)
                used.append(len(stars))
        return out, used

    def _fit_flux_ratio(
        self,
        science: Exposure,
        reference: Exposure,
        stars: pd.DataFrame,
        tiles: list[Tile],
        psfs: list[tuple[np.ndarray, np.ndarray]],
        psf_mode: str,
    ) -> tuple[float, float, int]:
        xs, ys = stars["x"].to_numpy(), stars["y"].to_numpy()
        f_n, e_n, f_r, e_r = (np.full(len(stars), np.nan) for _ in range(4))
        fwhm = float(stars.attrs.get("fwhm", science.psf.fwhm_at(*tiles[0].centre)))
        size = psfs[0][0].shape[0]
        stamps = None
        bad_n, bad_r = unusable_pixels([science]), unusable_pixels([reference])
        if self.flux_ratio_photometry == "psf" and psf_mode == "estimate":
            # measure the very stamps the PSFs were stacked from (the stars' stamps fit the frame)
            stamps = [
                aligned_stamps(e, xs, ys, size, fwhm=fwhm, recentre=False) for e in (science, reference)
            ]
        core = min(size, 2 * math.ceil(1.5 * fwhm) + 1)
        lo = (size - core) // 2
        kn, kr = (np.zeros((len(stars), core, core)) for _ in range(2))  # per-star PSF cores
        for tile, (p_n, p_r) in zip(tiles, psfs, strict=True):
            inside = tile.contains(xs, ys)
            if not inside.any():
                continue
            if self.flux_ratio_photometry == "aperture":
                radius = min(3.0 * fwhm, size // 2 - 1.0)
                f_n[inside], e_n[inside] = aperture_fluxes(
                    science.image, science.variance, bad_n, xs[inside], ys[inside], radius, psf=p_n
                )
                f_r[inside], e_r[inside] = aperture_fluxes(
                    reference.image, reference.variance, bad_r, xs[inside], ys[inside], radius, psf=p_r
                )
            elif stamps is not None:
                (sn, vn), (sr, vr) = stamps
                f_n[inside], e_n[inside] = windowed_stamp_fluxes(sn[inside], vn[inside], p_n, fwhm=fwhm)
                f_r[inside], e_r[inside] = windowed_stamp_fluxes(sr[inside], vr[inside], p_r, fwhm=fwhm)
            else:
                kn[inside] = p_n[lo : lo + core, lo : lo + core]
                kr[inside] = p_r[lo : lo + core, lo : lo + core]
        if self.flux_ratio_photometry == "psf" and stamps is None:
            # PSF fit on the core, where the flux information is (and few neighbours are); the core
            # is not renormalised, so the fit returns the flux of the whole PSF image
            f_n, e_n = psf_fluxes(science.image, science.variance, bad_n, xs, ys, kn)
            f_r, e_r = psf_fluxes(reference.image, reference.variance, bad_r, xs, ys, kr)
        return fit_flux_ratio(
            f_r,
            e_r,
            f_n,
            e_n,
            min_stars=self.min_stars,
            source=f"science {science.source} / reference {reference.source}",
        )

    def _tile_offsets(
        self, tiles: list[Tile], science: Exposure, stars: pd.DataFrame
    ) -> tuple[list[tuple[float, float]], tuple[float, float]]:
        """Registration offset ``(dx, dy)`` (pixels, science minus reference) at each tile's centre
        from the affine :func:`registration_model`, and the residual scatter per axis (pixels)."""
        predict, scatter = registration_model(registration_offsets(science, stars), science.shape)
        return [predict(*tile.centre) for tile in tiles], scatter

    def subtract(self, science: Exposure, reference: Exposure) -> Difference:
        check_aligned(science, reference)
        check_background(science, reference)
        ny, nx = science.shape
        cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
        size = self._psf_size(science, reference, cx, cy)
        half = size // 2

        # Pixels without data in either image are zero in both (so no star is left unbalanced) and
        # become NO_DATA in the output, grown by the PSF half-size over which convolution spreads them.
        no_data = ~(science.valid() & reference.valid())
        if no_data.all():
            raise InvalidExposureError(
                f"science {science.source} / reference {reference.source}: field 'mask' leaves no pixel "
                "with data in both exposures"
            )
        overlap = size if self.tile_overlap is None else self.tile_overlap
        per_side = self._per_side(science.shape)
        tiles = make_tiles(science.shape, per_side, overlap)
        fallbacks: list[str] = []

        def fallback(purpose: str, err: InvalidExposureError) -> None:
            if self.few_stars == "error":
                raise err
            fallbacks.append(purpose)
            log.warning("%s; %s falls back (few_stars='fallback')", err, purpose)

        stars = pd.DataFrame(columns=["x", "y", "snr"], dtype=float)
        if (
            self.psf == "estimate"
            or self.flux_ratio == "fit"
            or self.estimate_astrometry
            or self.registration == "estimate"
        ):
            stars = self._stars(science, reference, size)
        psf_mode = self.psf
        if psf_mode == "estimate":
            try:
                psfs, psf_stars = self._tile_psfs(tiles, science, reference, stars, size, "estimate")
            except InvalidExposureError as err:
                fallback("psf", err)
                psf_mode = "model"
        if psf_mode == "model":
            psfs, psf_stars = self._tile_psfs(tiles, science, reference, stars, size, "model")

        f_n = 1.0
        f_r_zero_point = adu_ratio(reference, science)
        f_r, f_r_err, n_ratio = f_r_zero_point, 0.0, 0
        if self.flux_ratio == "fit":
            try:
                require_stars(stars, self.min_stars, reference, "the flux-ratio fit")
                f_r, f_r_err, n_ratio = self._fit_flux_ratio(science, reference, stars, tiles, psfs, psf_mode)
            except InvalidExposureError as err:
                fallback("flux_ratio", err)

        offsets = [(0.0, 0.0)] * len(tiles)
        scatter = None  # the registration error left after the offsets are put into P_r
        if self.registration == "estimate" and psf_mode == "model":
            try:
                require_stars(stars, self.min_stars, reference, "the registration offset")
                offsets, scatter = self._tile_offsets(tiles, science, stars)
            except InvalidExposureError as err:
                fallback("registration", err)
            # the reference's stars lie at the science's positions minus the offset: so does P_r
            psfs = [
                (p_n, shift_kernel(p_r, -dx, -dy) if dx or dy else p_r)
                for (p_n, p_r), (dx, dy) in zip(psfs, offsets, strict=True)
            ]
        astrometric_sigma = self.astrometric_sigma
        if self.estimate_astrometry:
            try:
                require_stars(stars, self.min_stars, reference, "the astrometric-noise estimate")
                astrometric_sigma = scatter if scatter is not None else registration_rms(science, stars)
            except InvalidExposureError as err:
                fallback("astrometric_sigma", err)

        def zeroed(array: np.ndarray) -> np.ndarray:
            return np.where(no_data, np.float32(0), array).astype(np.float32, copy=False)

        planes = [zeroed(a) for a in (science.image, reference.image, science.variance, reference.variance)]
        image, variance, score = (np.full(science.shape, np.nan, np.float32) for _ in range(3))
        kernels, sigmas, f_ds, backgrounds = [], [], [], []
        for tile, (p_n, p_r) in zip(tiles, psfs, strict=True):
            outer = tile.outer_slices
            valid = ~no_data[outer]
            if not valid.any():
                kernels.append(np.outer(*(2 * [np.eye(1, size, half)[0]])))
                continue
            sigma_n = _robust_sigma(science.image[outer], science.variance[outer], valid, self.noise)
            sigma_r = _robust_sigma(reference.image[outer], reference.variance[outer], valid, self.noise)
            if not (sigma_n > 0 and sigma_r > 0):
                raise InvalidExposureError(
                    f"science {science.source} / reference {reference.source}: background noise estimate "
                    f"is not positive (sigma_n={sigma_n}, sigma_r={sigma_r})"
                )
            result = proper_subtraction(
                *(p[outer] for p in planes),
                p_n,
                p_r,
                sigma_n=sigma_n,
                sigma_r=sigma_r,
                f_n=f_n,
                f_r=f_r,
                astrometric_sigma=astrometric_sigma,
                pad=size if self.pad is None else self.pad,
                valid=valid if self.background == "constant" else None,
            )
            core, inner = tile.core_slices, tile.core_in_outer
            image[core] = result.image[inner]
            variance[core] = result.variance[inner]
            score[core] = result.score[inner]
            kernels.append(result.psf)
            sigmas.append((sigma_n, sigma_r))
            f_ds.append(result.f_d)
            backgrounds.append(result.background)

        mask = (science.mask | reference.mask).astype(np.uint16)
        if no_data.any():
            grown = ndimage.maximum_filter(no_data.view(np.uint8), size=2 * half + 1, mode="constant")
            grown = grown.astype(bool)
            mask[grown] |= np.uint16(Mask.NO_DATA)
            image[grown] = np.nan
            variance[grown] = np.nan
            score[grown] = np.nan

        if len(tiles) == 1:
            psf = ImagePSF(kernels[0])
        else:
            psf = TiledPSF(tuple(kernels), tuple(tile_edges(ny, per_side)), tuple(tile_edges(nx, per_side)))
        sigma_n, sigma_r = (float(np.median(v)) for v in zip(*sigmas, strict=True))
        return Difference(
            image=image,
            variance=variance,
            mask=mask,
            psf=psf,
            wcs=science.wcs,
            zero_point=science.zero_point,
            method=self.name,
            score=score,
            meta={
                "F_D": float(np.median(f_ds)),
                "F_n": f_n,
                "F_r": f_r,
                "F_r_err": f_r_err,
                "F_r_zero_point": f_r_zero_point,
                "flux_ratio": self.flux_ratio,
                "flux_ratio_stars": n_ratio,
                "psf": self.psf,
                "psf_stars": psf_stars,
                "sigma_n": sigma_n,
                "sigma_r": sigma_r,
                "psf_size": size,
                "tiles": per_side,
                "astrometric_sigma": astrometric_sigma,
                "background": backgrounds,
                "registration_offsets": offsets,
                "fallbacks": fallbacks,
            },
        )
