"""Exposure and Difference: the records that flow between simulation, subtraction and detection.

Images are in detector units (ADU) with numpy ``[y, x]`` order and 0-based pixel coordinates; a
magnitude is ``zero_point - 2.5 log10(flux / ADU)``. Invalid pixels are NaN *and* carry the
``NO_DATA`` mask bit; any other NaN is an error, reported with the exposure's source and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from hybrid.psf import PSF


class InvalidExposureError(ValueError):
    """An exposure whose arrays, WCS or calibration cannot be used; the message names source and field."""


class Mask:
    """Per-pixel mask bits of the uint16 mask plane."""

    BAD = np.uint16(1)  # known hot pixel or bad column
    SATURATED = np.uint16(2)  # at or above the saturation level, bleed trails included
    NO_DATA = np.uint16(4)  # outside the footprint (NaN in the image)
    EDGE = np.uint16(8)  # within the frame's edge margin


def _check_plane(name: str, array: np.ndarray, shape: tuple[int, ...], source: str) -> None:
    if array.ndim != 2:
        raise InvalidExposureError(f"{source}: field {name!r} must be a 2-D image, got shape {array.shape}")
    if array.shape != shape:
        raise InvalidExposureError(
            f"{source}: field {name!r} has shape {array.shape}, but the image has shape {shape}"
        )


@dataclass
class Exposure:
    """A calibrated image with everything subtraction and detection need.

    Args:
        image: pixel values (ADU), float32.
        variance: per-pixel variance (ADU^2), including source Poisson noise.
        mask: ``Mask`` bits, uint16.
        psf: the PSF model or image (see :mod:`hybrid.psf`).
        wcs: celestial WCS of the image.
        zero_point: magnitude of a source with a total flux of 1 ADU.
        gain: e-/ADU.
        saturation: level (ADU) above which pixels are unreliable.
        survey, band: names, e.g. ``"ztf"``, ``"r"``.
        mjd: mid-exposure time (MJD).
        background_subtracted: whether the sky level has been removed from ``image``.
        source: where the exposure came from (a file path or a simulation id), for error messages.
    """

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    psf: PSF
    wcs: WCS
    zero_point: float
    gain: float = 1.0
    saturation: float = np.inf
    survey: str = "unknown"
    band: str = "r"
    mjd: float = 0.0
    background_subtracted: bool = False
    source: str = "<memory>"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]

    def validate(self) -> None:
        """Raise :class:`InvalidExposureError` naming the source and field of any inconsistency."""
        src = self.source
        _check_plane("image", self.image, self.image.shape, src)
        _check_plane("variance", self.variance, self.image.shape, src)
        _check_plane("mask", self.mask, self.image.shape, src)
        if not np.issubdtype(self.image.dtype, np.floating):
            raise InvalidExposureError(f"{src}: field 'image' must be floating point, got {self.image.dtype}")
        if self.wcs is None or not getattr(self.wcs, "has_celestial", False):
            raise InvalidExposureError(f"{src}: field 'wcs' is missing or has no celestial axes")
        if not np.isfinite(self.zero_point):
            raise InvalidExposureError(f"{src}: field 'zero_point' is not finite ({self.zero_point})")
        no_data = (self.mask & Mask.NO_DATA) != 0
        bad = ~np.isfinite(self.image) & ~no_data
        if bad.any():
            raise InvalidExposureError(
                f"{src}: field 'image' has {int(bad.sum())} NaN/inf pixels without the NO_DATA mask bit"
            )
        if no_data.all():
            raise InvalidExposureError(f"{src}: field 'image' has no valid pixels (all NaN / NO_DATA)")
        var_bad = ~(np.isfinite(self.variance) & (self.variance > 0)) & ~no_data
        if var_bad.any():
            raise InvalidExposureError(
                f"{src}: field 'variance' has {int(var_bad.sum())} non-positive or non-finite valid pixels"
            )

    def valid(self) -> np.ndarray:
        """Boolean map of pixels with data."""
        return (self.mask & Mask.NO_DATA) == 0


def adu_ratio(numerator: Exposure, denominator: Exposure) -> float:
    """ADU of one source in ``numerator`` per ADU of it in ``denominator``: 10^(0.4 (zp_num - zp_den))."""
    return float(10.0 ** (0.4 * (numerator.zero_point - denominator.zero_point)))


def check_aligned(science: Exposure, reference: Exposure) -> None:
    """Subtraction needs both images on one pixel grid; say clearly when they are not."""
    if science.shape != reference.shape:
        raise InvalidExposureError(
            f"science {science.source} has shape {science.shape} but reference {reference.source} has "
            f"shape {reference.shape}; resample the reference onto the science grid first"
        )


@dataclass
class Difference:
    """A difference image in the science exposure's flux units (ADU at ``zero_point``).

    ``score`` is a matched-filter detection statistic in units of its own noise where the method
    provides one (ZOGY's S_corr); ``meta`` holds method-specific scalars (e.g. ZOGY's F_D).
    """

    image: np.ndarray
    variance: np.ndarray
    mask: np.ndarray
    psf: PSF
    wcs: WCS
    zero_point: float
    method: str
    score: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
