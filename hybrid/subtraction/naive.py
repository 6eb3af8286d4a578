"""Naive subtraction: Gaussian PSF matching, photometric scaling and a pixel-by-pixel difference.

The sharper of the two images is convolved with a Gaussian of
``sigma_k = sqrt(sigma_broad^2 - sigma_sharp^2)`` (``sigma = FWHM / (2 sqrt(2 ln 2))`` from each
PSF's FWHM at the frame centre), which matches the widths exactly for Gaussian PSFs and approximately
for Moffat ones (the wings stay different, so bright stars leave ring-shaped residuals). The
reference is then scaled to the science photometric scale, ``ratio = 10**(-0.4 (zp_ref - zp_sci))``
(``reference * ratio`` is in science ADU), and subtracted: ``image = science - ratio * reference``
with one of them convolved. It is the baseline that ZOGY (:mod:`hybrid.subtraction.zogy`) improves on.

Units: the difference is in science ADU; its ``variance`` (ADU^2) is the per-pixel propagation
``V_sci + ratio^2 V_ref`` with the convolved image's variance convolved with ``kernel^2``. The
convolution correlates neighbouring pixels, which a per-pixel variance does not describe. The PSF of
the difference is the broader exposure's PSF. There is no matched-filter ``score`` (``None``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from hybrid.exposure import Difference, Exposure, Mask, adu_ratio, check_aligned
from hybrid.subtraction import SUBTRACTORS, Subtractor
from hybrid.subtraction.zogy import check_background

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))  # 1 / 2.3548


def gaussian_kernel_1d(sigma: float, size: int) -> np.ndarray:
    """Unit-sum Gaussian of ``sigma`` pixels sampled at the centres of ``size`` (odd) pixels."""
    x = np.arange(size) - size // 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _convolve_separable(image: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    out = ndimage.convolve1d(image, kernel_1d, axis=0, mode="constant", cval=0.0)
    return ndimage.convolve1d(out, kernel_1d, axis=1, mode="constant", cval=0.0)


@SUBTRACTORS.register("naive")
class NaiveSubtractor(Subtractor):
    """Gaussian PSF matching + zero-point scaling + difference.

    Args:
        kernel_size: odd side (pixels) of the Gaussian matching kernel; ``None``: ``2 ceil(3 sigma_k)
            + 1`` (about 6 sigma_k).
    """

    def __init__(self, kernel_size: int | None = None) -> None:
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.kernel_size = kernel_size

    def subtract(self, science: Exposure, reference: Exposure) -> Difference:
        check_aligned(science, reference)
        check_background(science, reference)
        ny, nx = science.shape
        cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
        sigma_sci = science.psf.fwhm_at(cx, cy) * FWHM_TO_SIGMA
        sigma_ref = reference.psf.fwhm_at(cx, cy) * FWHM_TO_SIGMA
        ratio = adu_ratio(science, reference)

        no_data = ~(science.valid() & reference.valid())
        sci = np.where(no_data, 0.0, science.image).astype(np.float32)
        sci_var = np.where(no_data, 0.0, science.variance).astype(np.float32)
        ref = np.where(no_data, 0.0, reference.image * ratio).astype(np.float32)
        ref_var = np.where(no_data, 0.0, reference.variance * ratio**2).astype(np.float32)

        science_is_broader = sigma_sci >= sigma_ref
        sigma_k = math.sqrt(abs(sigma_sci**2 - sigma_ref**2))
        size = 1
        if sigma_k > 0:
            size = self.kernel_size or 2 * math.ceil(3.0 * sigma_k) + 1
            kernel = gaussian_kernel_1d(sigma_k, size).astype(np.float32)
            if science_is_broader:
                ref = _convolve_separable(ref, kernel)
                ref_var = _convolve_separable(ref_var, kernel * kernel)
            else:
                sci = _convolve_separable(sci, kernel)
                sci_var = _convolve_separable(sci_var, kernel * kernel)

        image = sci - ref
        variance = sci_var + ref_var
        mask = (science.mask | reference.mask).astype(np.uint16)
        if no_data.any():
            grown = ndimage.maximum_filter(no_data.view(np.uint8), size=size, mode="constant").astype(bool)
            mask[grown] |= np.uint16(Mask.NO_DATA)
            image[grown] = np.nan
            variance[grown] = np.nan

        return Difference(
            image=image.astype(np.float32, copy=False),
            variance=variance.astype(np.float32, copy=False),
            mask=mask,
            psf=science.psf if science_is_broader else reference.psf,
            wcs=science.wcs,
            zero_point=science.zero_point,
            method=self.name,
            score=None,
            meta={
                "ratio": ratio,
                "sigma_k": sigma_k,
                "kernel_size": size,
                "convolved": "reference" if science_is_broader else "science",
            },
        )
