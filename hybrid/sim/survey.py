"""Survey profiles: the instrument and site numbers that make a simulated frame look like a survey's.

The published values and their sources are in ``conf/survey/*.yaml``; this module turns them into
derived quantities (sky level in electrons, 5-sigma point-source depth) so that a test can check a
profile against the depth the survey reports.

A profile also says what the survey *delivers*, so that training on its simulation learns nothing the
real stream lacks:

* per-exposure conditions (:meth:`SurveyProfile.draw_conditions`): exposure time, extinction by
  cloud (with the clear fraction of the site) and the zero point that follows from both;
* the cutout convention of its alerts (:class:`CutoutConvention`): sky kept or removed, template
  matched to the science image or not, and the sign of the difference of negative detections;
* which features its alerts carry at alert time (``alert_features``; None: every feature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hybrid.photometry import PSF_FIT_ERRORS
from hybrid.psf import moffat_alpha


@dataclass(frozen=True)
class CutoutConvention:
    """How a survey's alert cutouts are made (the stored stamps follow it).

    Args:
        sky: the science (and matched template) cutouts keep the sky background, in DN.
        template_matched: the template cutout is scaled to the science image's zero point and has the
            science image's sky added (ZTF: Masci et al. 2019, sec. 3.7, the template is
            PSF-matched, gain-matched and background-matched to the science image before differencing).
        negative_flipped: the difference cutout of a negative detection is template minus science, so
            its source is a positive peak (ZTF ``isdiffpos = 'f'``); otherwise science minus template.
    """

    sky: bool = False
    template_matched: bool = False
    negative_flipped: bool = False


@dataclass(frozen=True)
class ExposureConditions:
    """One science exposure's conditions.

    Args:
        exposure_time: s.
        extinction: mag lost to cloud and airmass above the profile's nominal zero point.
        zero_point: magnitude of 1 ADU (DN) in this exposure.
        cloud_patchiness: fractional rms of the transparency across the frame (thin cloud is patchy).
    """

    exposure_time: float
    extinction: float
    zero_point: float
    cloud_patchiness: float = 0.0

    @property
    def throughput(self) -> float:
        return float(10 ** (-0.4 * self.extinction))


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
        transparency_sigma: frame-to-frame extinction spread (mag) on clear nights (airmass, dust).
        exposure_times: exposure times (s) the survey's programs use; ``()`` for ``exposure_time`` only.
            ``zero_point`` is for ``exposure_time``; other exposures scale it by ``2.5 log10(t / t0)``.
        exposure_time_weights: share of exposures at each of ``exposure_times``.
        clear_fraction: share of exposures taken through a clear sky.
        cloud_extinction: mean extinction (mag) of the exposures taken through cloud (exponential).
        cloud_max_extinction: the survey stops observing beyond this extinction (mag).
        cloud_patchiness: fractional rms of the transparency across a frame per magnitude of cloud.
        cutouts: the alert cutout convention.
        alert_features: features the survey's alerts carry at alert time (None: all of them).
        alert_cuts: feature -> [min, max] (either null) that a detection must meet to be issued as an
            alert (the stream's own selection, so that the simulated candidates are the stream's).
        psf_fit_errors: how the survey's pipeline weighs pixels in the PSF fit of a candidate and
            states its error (``hybrid.detection.features.measure_stamps``).
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
    exposure_times: tuple[float, ...] = ()
    exposure_time_weights: tuple[float, ...] = ()
    clear_fraction: float = 1.0
    cloud_extinction: float = 0.0
    cloud_max_extinction: float = 5.0
    cloud_patchiness: float = 0.0
    cutouts: CutoutConvention = field(default_factory=CutoutConvention)
    alert_features: tuple[str, ...] | None = None
    alert_cuts: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    psf_fit_errors: str = "variance"

    def __post_init__(self) -> None:
        if not isinstance(self.cutouts, CutoutConvention):  # a mapping, from a Hydra config
            object.__setattr__(self, "cutouts", CutoutConvention(**self.cutouts))
        cuts = {str(k): (v[0], v[1]) for k, v in dict(self.alert_cuts).items()}
        object.__setattr__(self, "alert_cuts", cuts)
        for name in ("exposure_times", "exposure_time_weights"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.alert_features is not None:
            object.__setattr__(self, "alert_features", tuple(self.alert_features))
        if len(self.exposure_times) != len(self.exposure_time_weights):
            raise ValueError(
                f"survey {self.name}: exposure_times {self.exposure_times} and exposure_time_weights "
                f"{self.exposure_time_weights} differ in length"
            )
        if self.psf_fit_errors not in PSF_FIT_ERRORS:
            raise ValueError(
                f"survey {self.name}: psf_fit_errors must be one of {PSF_FIT_ERRORS}, "
                f"got {self.psf_fit_errors!r}"
            )
        if not 0.0 <= self.clear_fraction <= 1.0:
            raise ValueError(
                f"survey {self.name}: clear_fraction must be in [0, 1], got {self.clear_fraction}"
            )

    def issued(self, candidates: pd.DataFrame) -> np.ndarray:
        """Which detections the survey issues as alerts (``alert_cuts``; all when there are none)."""
        keep = np.ones(len(candidates), bool)
        for name, (lo, hi) in self.alert_cuts.items():
            if name not in candidates:
                raise KeyError(f"survey {self.name}: alert cut on {name!r}, which is not a measured feature")
            values = candidates[name].to_numpy(float)
            if lo is not None:
                keep &= values >= lo
            if hi is not None:
                keep &= values <= hi
        return keep

    def draw_conditions(self, rng: np.random.Generator) -> ExposureConditions:
        """Exposure time, extinction and zero point of one science exposure.

        Clear exposures lose ``|N(0, transparency_sigma)|`` mag; the others are taken through cloud
        with an exponential extinction of mean ``cloud_extinction`` (at most ``cloud_max_extinction``),
        and their transparency varies across the frame by ``cloud_patchiness`` per magnitude of cloud.
        """
        if self.exposure_times:
            w = np.asarray(self.exposure_time_weights, float)
            t = float(rng.choice(np.asarray(self.exposure_times), p=w / w.sum()))
        else:
            t = self.exposure_time
        extinction = abs(rng.normal(0, self.transparency_sigma))
        patchy = 0.0
        if rng.uniform() >= self.clear_fraction and self.cloud_extinction > 0:
            cloud = min(rng.exponential(self.cloud_extinction), self.cloud_max_extinction)
            extinction += cloud
            patchy = self.cloud_patchiness * cloud
        zp = self.zero_point + 2.5 * np.log10(t / self.exposure_time) - extinction
        return ExposureConditions(t, float(extinction), float(zp), float(patchy))

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
