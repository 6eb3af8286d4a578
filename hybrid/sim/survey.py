"""Survey profiles: the instrument and site numbers that make a simulated frame look like a survey's.

The published values and their sources are in ``conf/survey/*.yaml``; this module turns them into
derived quantities (sky level in electrons, 5-sigma point-source depth) so that a test can check a
profile against the depth the survey reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid.psf import moffat_alpha


@dataclass(frozen=True)
class SurveyProfile:
    """One survey's camera, site and reference-image numbers.

    Args:
        name: short survey name (``ztf``, ``goto``, ``atlas``, ``rubin``).
        band: filter name.
        pixel_scale: arcsec / pixel.
        gain: e- / ADU.
        read_noise: e- per pixel per read.
        exposure_time: science exposure (s).
        zero_point: magnitude of a source giving 1 ADU in total in one science exposure.
        sky_brightness: median dark-ish sky (mag / arcsec^2).
        sky_sigma: spread of the sky brightness between frames (mag / arcsec^2), moon and airmass.
        seeing_median: median delivered PSF FWHM (arcsec).
        seeing_sigma: log-normal spread of the seeing (natural log).
        psf_beta: Moffat beta of the PSF.
        saturation: saturation level (ADU).
        pixel_size: physical pixel size (micron).
        depth_m5: published median 5-sigma point-source depth of one exposure (mag), for validation.
        reference_exposures: number of science-like exposures stacked into the reference image.
        reference_seeing_factor: reference FWHM / median science FWHM (references select good seeing).
        transparency_sigma: frame-to-frame extinction spread (mag), from thin cloud.
    """

    name: str
    band: str
    pixel_scale: float
    gain: float
    read_noise: float
    exposure_time: float
    zero_point: float
    sky_brightness: float
    sky_sigma: float
    seeing_median: float
    seeing_sigma: float
    psf_beta: float
    saturation: float
    depth_m5: float
    pixel_size: float = 15.0
    reference_exposures: int = 20
    reference_seeing_factor: float = 0.85
    transparency_sigma: float = 0.05

    @property
    def pixel_area(self) -> float:
        """arcsec^2 per pixel."""
        return self.pixel_scale**2

    def sky_adu(self, sky_brightness: float | None = None) -> float:
        """Sky level per pixel in one exposure (ADU)."""
        mu = self.sky_brightness if sky_brightness is None else sky_brightness
        return float(10 ** (-0.4 * (mu - self.zero_point)) * self.pixel_area)

    def effective_area(self, fwhm_arcsec: float | None = None) -> float:
        """Noise-equivalent area 1 / sum(PSF^2) of the Moffat PSF (pixels).

        For a Moffat profile this is ``pi alpha^2 (2 beta - 1) / (beta - 1)^2``.
        """
        fwhm_px = (self.seeing_median if fwhm_arcsec is None else fwhm_arcsec) / self.pixel_scale
        alpha = moffat_alpha(fwhm_px, self.psf_beta)
        b = self.psf_beta
        return float(np.pi * alpha**2 * (2 * b - 1) / (b - 1) ** 2)

    def limiting_magnitude(
        self, fwhm_arcsec: float | None = None, sky_brightness: float | None = None, snr: float = 5.0
    ) -> float:
        """Point-source magnitude detected at ``snr`` by PSF photometry in one science exposure.

        Solves ``F = snr sqrt(F + n_eff (sky + RN^2))`` in electrons.
        """
        sky_e = self.sky_adu(sky_brightness) * self.gain
        background = self.effective_area(fwhm_arcsec) * (sky_e + self.read_noise**2)
        flux_e = (snr**2 + np.sqrt(snr**4 + 4 * snr**2 * background)) / 2
        return float(self.zero_point - 2.5 * np.log10(flux_e / self.gain))

    def saturation_mag(self, fwhm_arcsec: float | None = None) -> float:
        """Magnitude of a point source whose peak pixel (sky included) reaches saturation."""
        fwhm_px = (self.seeing_median if fwhm_arcsec is None else fwhm_arcsec) / self.pixel_scale
        alpha = moffat_alpha(fwhm_px, self.psf_beta)
        peak_fraction = (self.psf_beta - 1) / (np.pi * alpha**2)
        return float(self.zero_point - 2.5 * np.log10((self.saturation - self.sky_adu()) / peak_fraction))

    def mag_to_adu(self, mag: np.ndarray | float) -> np.ndarray | float:
        """Total flux (ADU) of a source of magnitude ``mag`` in one science exposure."""
        return 10 ** (-0.4 * (np.asarray(mag) - self.zero_point))
