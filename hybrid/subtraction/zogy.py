"""ZOGY: the proper image subtraction of Zackay, Ofek & Gal-Yam (2016, ApJ 830, 27; "ZOGY16" below).

Notation follows the paper. ``N`` is the new (science) image and ``R`` the reference, on one pixel
grid and background subtracted; ``P_n``, ``P_r`` their unit-sum PSFs; ``sigma_n``, ``sigma_r`` their
background noise (ADU of each image); ``F_n``, ``F_r`` their flux zero points, i.e. a source of true
flux ``T`` has total flux ``F_n T`` in ``N`` and ``F_r T`` in ``R``. Fluxes are measured in the
science image's units, so ``F_n = 1`` and ``F_r = 10**(0.4 (zp_ref - zp_sci))``: a source of science
flux ``f`` has flux ``F_r f`` in the reference. A hat denotes the 2-D discrete Fourier transform and
``⊗`` convolution.

* eq. 13  ``D_hat = (F_r P_r_hat N_hat - F_n P_n_hat R_hat) / sqrt(sigma_n^2 F_r^2 |P_r_hat|^2
  + sigma_r^2 F_n^2 |P_n_hat|^2)`` -- the difference image, white noise of unit variance for
  background-limited images (the square root is ``denom`` below);
* eq. 14  ``P_D_hat = F_r F_n P_r_hat P_n_hat / (F_D denom)`` -- its PSF (unit sum);
* eq. 15  ``F_D = F_r F_n / sqrt(sigma_n^2 F_r^2 + sigma_r^2 F_n^2)`` -- its flux zero point, so that
  a transient of science flux ``f`` appears in ``D`` as ``F_D f P_D``;
* eq. 12  ``S_hat = F_D D_hat conj(P_D_hat)``, i.e. ``S = F_D D ⊗ flip(P_D)`` -- the matched-filter
  score for a point source, written as ``S = S_N - S_R`` with ``S_N = k_n ⊗ N``, ``S_R = k_r ⊗ R``;
* eqs. 28-29  ``k_r_hat = F_r F_n^2 conj(P_r_hat) |P_n_hat|^2 / denom^2``,
  ``k_n_hat = F_n F_r^2 conj(P_n_hat) |P_r_hat|^2 / denom^2``;
* eqs. 26-27  ``V(S_N) = V_N ⊗ k_n^2``, ``V(S_R) = V_R ⊗ k_r^2`` with the exposures' full variance
  images (background and source noise), so that bright stars do not pass as transients;
* eqs. 30-31  ``V_ast(S_N) = sigma_x^2 (dS_N/dx)^2 + sigma_y^2 (dS_N/dy)^2`` (and the same for
  ``S_R``) for a registration error of rms ``(sigma_x, sigma_y)`` pixels;
* eq. 25  ``S_corr = S / sqrt(V(S_N) + V(S_R) + V_ast(S_N) + V_ast(S_R))`` -- the corrected score,
  Gaussian of unit variance on empty sky (exactly so for white noise without the astrometric term).

The returned :class:`~hybrid.exposure.Difference` holds ``D / F_D``: science ADU, so a transient of
science flux ``f`` has total flux ``f`` in it with PSF ``P_D``. Its variance is propagated per pixel
from the input variance images through the linear map ``D = k_Dn ⊗ N - k_Dr ⊗ R`` (``k_Dn_hat =
F_r P_r_hat / denom``, ``k_Dr_hat = F_n P_n_hat / denom``): ``(V_N ⊗ k_Dn^2 + V_R ⊗ k_Dr^2) / F_D^2``
(ADU^2). Its ``score`` is ``S_corr`` (dimensionless, in units of its own noise).

The PSFs are taken at the frame centre (the paper's method assumes one PSF per image; spatially
varying PSFs need the frame split into sub-images). Convolutions are circular FFTs over the image
zero-padded by ``pad`` pixels, so sources near one edge do not wrap onto the other.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from hybrid.exposure import Difference, Exposure, InvalidExposureError, Mask, check_aligned
from hybrid.psf import ImagePSF
from hybrid.subtraction import SUBTRACTORS, Subtractor

_MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4)


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


def robust_sigma(exp: Exposure, valid: np.ndarray, method: str) -> float:
    """Background noise (ADU) of an exposure from its valid pixels.

    ``"variance"``: ``sqrt(median(variance))``; ``"mad"``: 1.4826 x the median absolute deviation
    of the image (insensitive to the sources on top of the background).
    """
    if method == "variance":
        return float(np.sqrt(np.median(exp.variance[valid])))
    values = exp.image[valid].astype(np.float64)
    med = np.median(values)
    return float(_MAD_TO_SIGMA * np.median(np.abs(values - med)))


@SUBTRACTORS.register("zogy")
class ZOGYSubtractor(Subtractor):
    """Proper image subtraction (ZOGY16): difference ``D / F_D``, its PSF ``P_D`` and ``S_corr``.

    Args:
        psf_size: odd side (pixels) of the PSF stamps taken from the exposures and of the
            difference PSF. ``None``: ``max(31, 2 round(4 FWHM) + 1)`` of the broader PSF, clipped
            to the image.
        noise: how ``sigma_n``, ``sigma_r`` are estimated: ``"variance"`` (square root of the median
            of the variance image) or ``"mad"`` (robust std of the image pixels).
        astrometric_sigma: rms registration error (pixels), a float for both axes or ``(sigma_x,
            sigma_y)``; adds the astrometric-noise terms of ZOGY16 eqs. 30-31 to the variance of S.
        pad: zeros (pixels) appended to each axis before the FFTs so that convolutions do not
            wrap around; ``None``: ``psf_size``. The padded size is rounded up to a fast FFT length.
            ``0`` gives purely circular convolution.
    """

    def __init__(
        self,
        psf_size: int | None = None,
        noise: Literal["variance", "mad"] = "variance",
        astrometric_sigma: float | tuple[float, float] = 0.0,
        pad: int | None = None,
    ) -> None:
        if psf_size is not None and (psf_size < 3 or psf_size % 2 == 0):
            raise ValueError(f"psf_size must be an odd integer >= 3, got {psf_size}")
        if noise not in ("variance", "mad"):
            raise ValueError(f"noise must be 'variance' or 'mad', got {noise!r}")
        sig = np.broadcast_to(np.asarray(astrometric_sigma, dtype=float), (2,))
        if np.any(sig < 0) or not np.all(np.isfinite(sig)):
            raise ValueError(f"astrometric_sigma must be finite and >= 0, got {astrometric_sigma}")
        if pad is not None and pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.psf_size = psf_size
        self.noise = noise
        self.astrometric_sigma = (float(sig[0]), float(sig[1]))
        self.pad = pad

    def _psf_size(self, science: Exposure, reference: Exposure, cx: float, cy: float) -> int:
        ny, nx = science.shape
        if self.psf_size is not None:
            size = self.psf_size
        else:
            fwhm = max(science.psf.fwhm_at(cx, cy), reference.psf.fwhm_at(cx, cy))
            size = max(31, 2 * round(4 * fwhm) + 1)
        limit = min(ny, nx)
        limit -= 1 - limit % 2  # largest odd size that fits
        return min(size, limit)

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
        valid = ~no_data
        sigma_n = robust_sigma(science, valid, self.noise)
        sigma_r = robust_sigma(reference, valid, self.noise)
        if not (sigma_n > 0 and sigma_r > 0):
            raise InvalidExposureError(
                f"science {science.source} / reference {reference.source}: background noise estimate "
                f"is not positive (sigma_n={sigma_n}, sigma_r={sigma_r})"
            )
        f_n = 1.0
        f_r = 10.0 ** (0.4 * (reference.zero_point - science.zero_point))

        pad = size if self.pad is None else self.pad
        shape = (sfft.next_fast_len(ny + pad, real=True), sfft.next_fast_len(nx + pad, real=True))

        def padded(array: np.ndarray) -> np.ndarray:
            out = np.zeros(shape, dtype=np.float32)
            out[:ny, :nx] = array
            if no_data.any():
                out[:ny, :nx][no_data] = 0.0
            return out

        def fft(array: np.ndarray) -> np.ndarray:
            return sfft.rfft2(array, workers=1)

        def ifft(array: np.ndarray) -> np.ndarray:
            return sfft.irfft2(array, s=shape, workers=1)

        n_hat = fft(padded(science.image))
        r_hat = fft(padded(reference.image))
        vn_hat = fft(padded(science.variance))
        vr_hat = fft(padded(reference.variance))
        pn_hat = fft(embed_kernel(science.psf.image_at(cx, cy, size), shape))
        pr_hat = fft(embed_kernel(reference.psf.image_at(cx, cy, size), shape))

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

        # eqs. 28-29 kernels; S = S_N - S_R equals eq. 12, F_D D ⊗ flip(P_D)
        kn_hat = np.float32(f_n * f_r**2) * np.conj(pn_hat) * (abs_pr2 / denom2)
        kr_hat = np.float32(f_r * f_n**2) * np.conj(pr_hat) * (abs_pn2 / denom2)
        sn_hat = kn_hat * n_hat
        sr_hat = kr_hat * r_hat
        sig_x, sig_y = self.astrometric_sigma
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

        v_s = ifft(squared_hat(kn_hat) * vn_hat + squared_hat(kr_hat) * vr_hat)[:ny, :nx]
        v_d = ifft(squared_hat(kdn_hat) * vn_hat + squared_hat(kdr_hat) * vr_hat)[:ny, :nx]
        # FFT round-off can leave tiny negative values where the variance is ~0 (padding, NO_DATA)
        tiny = np.float32(1e-12) * np.float32(max(sigma_n, sigma_r) ** 2)
        np.maximum(v_s, tiny, out=v_s)
        np.maximum(v_d, tiny, out=v_d)

        if astrometric:  # eqs. 30-31
            for s_x in (s_n, s_r):
                gy, gx = np.gradient(s_x)
                v_s += np.float32(sig_x**2) * gx * gx + np.float32(sig_y**2) * gy * gy

        score = s / np.sqrt(v_s)  # eq. 25
        image = d * np.float32(1.0 / f_d)
        variance = v_d * np.float32(1.0 / f_d**2)

        mask = (science.mask | reference.mask).astype(np.uint16)
        if no_data.any():
            grown = ndimage.maximum_filter(no_data.view(np.uint8), size=2 * half + 1, mode="constant")
            grown = grown.astype(bool)
            mask[grown] |= np.uint16(Mask.NO_DATA)
            image[grown] = np.nan
            variance[grown] = np.nan
            score[grown] = np.nan

        return Difference(
            image=image.astype(np.float32, copy=False),
            variance=variance.astype(np.float32, copy=False),
            mask=mask,
            psf=ImagePSF(p_d),
            wcs=science.wcs,
            zero_point=science.zero_point,
            method=self.name,
            score=score.astype(np.float32, copy=False),
            meta={
                "F_D": f_d,
                "F_n": f_n,
                "F_r": f_r,
                "sigma_n": sigma_n,
                "sigma_r": sigma_r,
                "psf_size": size,
                "astrometric_sigma": self.astrometric_sigma,
            },
        )
