"""Other groups' public subtraction codes, as optional registered subtractors (the ``[peers]`` extra).

They are here to be measured against ours on the same pairs (`hybrid bench subtraction`), each
naming the method of ours that implements the same algorithm (``peer_of``):

* ``ois`` -- Bramich (2008, MNRAS 386, L77) pixel kernel in ois (Zhang 2019), against
  ``alard_lupton``;
* ``properimage`` -- ZOGY (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27) in properimage (Sánchez et al.
  2019, Astronomy and Computing 28, 100284), against ``zogy``;
* ``sfft`` -- Saccadic Fast Fourier Transform (Hu et al. 2022, ApJ 936, 157), customised mode on
  the NumPy backend, against ``zogy``.

A peer that is not installed is reported by :meth:`Subtractor.unavailable` and not run. None of them
propagates a variance: a peer's variance plane is the science variance scaled so that the median
pull of the difference on empty sky is 1 (``meta["variance"] == "empirical"``). properimage returns
ZOGY's whitened ``D`` without its flux zero point, so its difference is not in science ADU
(``meta["flux_calibrated"] is False``): flux measured on it means nothing.
"""

from __future__ import annotations

import os
import tempfile
from abc import abstractmethod
from typing import ClassVar

import numpy as np

from hybrid.exposure import Difference, Exposure, Mask, check_aligned
from hybrid.psf import PSF, ImagePSF
from hybrid.stats import mad_sigma
from hybrid.subtraction import SUBTRACTORS, Subtractor
from hybrid.subtraction.zogy import check_background


def empirical_variance(image: np.ndarray, science: Exposure) -> np.ndarray:
    """The science variance plane scaled to the empirical sky noise of ``image`` (ADU^2)."""
    valid = np.isfinite(image) & science.valid()
    pull = image[valid] / np.sqrt(science.variance[valid])
    scale = mad_sigma(pull)
    return (science.variance * scale**2).astype(np.float32)


class PeerSubtractor(Subtractor):
    """A peer code: inputs with their no-data pixels set to zero, the peer's difference back with
    NaN there, the union of the masks and an empirical variance."""

    flux_calibrated: ClassVar[bool] = True

    @abstractmethod
    def _difference(
        self, science: Exposure, reference: Exposure, sci: np.ndarray, ref: np.ndarray
    ) -> tuple[np.ndarray, PSF, np.ndarray | None]:
        """The peer's difference image, its PSF and its score (or None), from zero-filled pixels."""

    def subtract(self, science: Exposure, reference: Exposure) -> Difference:
        check_aligned(science, reference)
        check_background(science, reference)
        if why := self.unavailable():
            raise ModuleNotFoundError(f"subtractor {self.name!r}: {why}")
        sci = np.where(science.valid(), science.image, 0.0).astype(np.float64)
        ref = np.where(reference.valid(), reference.image, 0.0).astype(np.float64)
        image, psf, score = self._difference(science, reference, sci, ref)
        image = np.ascontiguousarray(image, dtype=np.float32)
        variance = empirical_variance(image, science)
        mask = (science.mask | reference.mask).astype(np.uint16)
        no_data = (mask & Mask.NO_DATA) != 0
        image[no_data] = variance[no_data] = np.nan
        if score is not None:
            score[no_data] = np.nan
        return Difference(
            image=image,
            variance=variance,
            mask=mask,
            psf=psf,
            wcs=science.wcs,
            zero_point=science.zero_point,
            method=self.name,
            score=score,
            meta={"variance": "empirical", "flux_calibrated": self.flux_calibrated},
        )


@SUBTRACTORS.register("ois")
class OisSubtractor(PeerSubtractor):
    """ois's Bramich pixel kernel (Zhang 2019) with a polynomial background.

    Args:
        kernel_size: side (pixels) of the pixel kernel.
        background_degree: degree of the differential background polynomial.
        method: ois's method (``Bramich``, ``AdaptiveBramich``, ``Alard-Lupton``).
    """

    requires = ("ois",)
    peer_of = "alard_lupton"

    def __init__(self, kernel_size: int = 11, background_degree: int = 1, method: str = "Bramich") -> None:
        self.kernel_size, self.background_degree, self.method = kernel_size, background_degree, method

    def _difference(
        self, science: Exposure, reference: Exposure, sci: np.ndarray, ref: np.ndarray
    ) -> tuple[np.ndarray, PSF, np.ndarray | None]:
        import ois

        shape = (self.kernel_size, self.kernel_size)
        diff, _, _, _ = ois.optimal_system(
            sci, ref, kernelshape=shape, bkgdegree=self.background_degree, method=self.method
        )
        return diff, science.psf, None


@SUBTRACTORS.register("properimage")
class ProperimageSubtractor(PeerSubtractor):
    """properimage's ZOGY (Sánchez et al. 2019): ``D`` (whitened, not in science ADU), its PSF and
    ``S_corr`` scaled to unit robust standard deviation (properimage takes the images as their own
    variance, so its ``S_corr`` is not unit-variance on the sky).

    Args:
        psf_half_size: half side (pixels) of the difference PSF kept from properimage's ``P_D``.
    """

    requires = ("properimage",)
    peer_of = "zogy"
    flux_calibrated = False

    def __init__(self, psf_half_size: int = 15) -> None:
        self.psf_half_size = psf_half_size

    def _difference(
        self, science: Exposure, reference: Exposure, sci: np.ndarray, ref: np.ndarray
    ) -> tuple[np.ndarray, PSF, np.ndarray | None]:
        from properimage.operations import subtract

        d, p, s_corr, _ = subtract(
            ref=ref,
            new=sci,
            smooth_psf=False,
            fitted_psf=True,
            align=False,
            iterative=False,
            beta=False,
            shift=False,
        )
        p = np.real(p)
        cy, cx = np.unravel_index(np.argmax(p), p.shape)
        kernel = np.roll(p, (p.shape[0] // 2 - cy, p.shape[1] // 2 - cx), axis=(0, 1))
        c0, c1, h = p.shape[0] // 2, p.shape[1] // 2, self.psf_half_size
        kernel = kernel[c0 - h : c0 + h + 1, c1 - h : c1 + h + 1]
        score = np.real(s_corr).astype(np.float32)
        valid = np.isfinite(score) & science.valid() & reference.valid()
        score /= np.float32(mad_sigma(score[valid]))
        return np.real(d), ImagePSF(kernel / kernel.sum()), score


@SUBTRACTORS.register("sfft")
class SfftSubtractor(PeerSubtractor):
    """sfft's customised mode (Hu et al. 2022) on the NumPy backend, the reference convolved; the
    kernel is fitted on the same bright isolated stars as our Alard-Lupton fit.

    Args:
        kernel_half_width: half width (pixels) of the matching kernel.
        kernel_degree: polynomial degree of the kernel's spatial variation.
        background_degree: polynomial degree of the differential background.
        stamp_half_size: half side (pixels) of the star stamps sfft fits on.
    """

    requires = ("sfft",)
    peer_of = "zogy"

    def __init__(
        self,
        kernel_half_width: int = 8,
        kernel_degree: int = 2,
        background_degree: int = 1,
        stamp_half_size: int = 10,
    ) -> None:
        self.kernel_half_width, self.kernel_degree = kernel_half_width, kernel_degree
        self.background_degree, self.stamp_half_size = background_degree, stamp_half_size

    def _difference(
        self, science: Exposure, reference: Exposure, sci: np.ndarray, ref: np.ndarray
    ) -> tuple[np.ndarray, PSF, np.ndarray | None]:
        from astropy.io import fits
        from sfft.CustomizedPacket import Customized_Packet

        from hybrid.subtraction.stars import select_stars

        valid = science.valid() & reference.valid()
        sci, ref = np.where(valid, sci, 0.0), np.where(valid, ref, 0.0)
        # sfft fits the kernel on "masked" images where everything but the chosen stamps is zero
        h = self.stamp_half_size
        stars = select_stars(reference, [science], half_size=h, border=self.kernel_half_width)
        keep = np.zeros(science.shape, bool)
        for x, y in zip(np.rint(stars["x"]).astype(int), np.rint(stars["y"]).astype(int), strict=True):
            keep[y - h : y + h + 1, x - h : x + h + 1] = True
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for name, data in (("ref", ref), ("sci", sci), ("mref", ref * keep), ("msci", sci * keep)):
                paths[name] = os.path.join(tmp, f"{name}.fits")
                header = fits.Header({"GAIN": 1.0, "SATURATE": 1e30})
                fits.writeto(paths[name], data.T.astype(np.float64), header)  # sfft reads FITS as [x, y]
            out = os.path.join(tmp, "diff.fits")
            Customized_Packet.CP(
                FITS_REF=paths["ref"],
                FITS_SCI=paths["sci"],
                FITS_mREF=paths["mref"],
                FITS_mSCI=paths["msci"],
                ForceConv="REF",
                GKerHW=self.kernel_half_width,
                FITS_DIFF=out,
                KerPolyOrder=self.kernel_degree,
                BGPolyOrder=self.background_degree,
                ConstPhotRatio=True,
                BACKEND_4SUBTRACT="Numpy",
                NUM_CPU_THREADS_4SUBTRACT=1,
                VERBOSE_LEVEL=0,
            )
            image = fits.getdata(out).T
        return image, science.psf, None


__all__ = ["OisSubtractor", "PeerSubtractor", "ProperimageSubtractor", "SfftSubtractor", "empirical_variance"]
