"""Real science and reference frames as exposures: reading, masking, zero points, reprojection, PSFs.

A survey's frames are not in this framework's own layout (:mod:`hybrid.data.fits`): the image is the
primary HDU or a named extension, the variance comes as a variance or weight (inverse variance)
extension or not at all, the mask as an extension of any bit convention, and the calibration in
keywords whose names differ between surveys. :class:`FrameFormat` names them per survey
(``conf/pipeline/*.yaml``), :func:`read_frame` reads a frame with it:

* pixels that are not finite become ``NO_DATA``; pixels at or above the saturation level (keyword)
  become ``SATURATED``, grown by ``saturation_grow`` pixels against bleeding into the neighbours;
  non-zero pixels of a foreign mask become ``BAD`` (a mask written by this framework, recognised by
  its ``MASKBIT*`` keywords, keeps its bits);
* without a variance or weight plane the variance is modelled as the sky's (sep's background rms map,
  which includes the read noise, Bertin & Arnouts 1996) plus the sources' Poisson noise
  ``max(image - sky, 0) / gain`` (ADU^2);
* the zero point is the header's, or fitted against a catalogue of the field (:func:`fit_zero_point`);
* the PSF is estimated from the frame's own stars (:func:`with_estimated_psf`), never taken on trust.

:func:`reproject_onto` puts a reference onto the science frame's pixel grid with the ``reproject``
package (Robitaille et al., astropy-affiliated), when their WCSs differ.

Every error names the file and the keyword or extension at fault.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sep
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy import ndimage
from scipy.spatial import cKDTree

from hybrid.data.fits import FitsFormatError, _Keywords, _native, _open_fits, _read_wcs
from hybrid.detection import subtract_background
from hybrid.exposure import Exposure, InvalidExposureError, Mask
from hybrid.photometry import psf_fluxes
from hybrid.psf import ImagePSF
from hybrid.subtraction.psf_estimation import centroids, estimate_psf
from hybrid.subtraction.stars import StarSelection, select_stars, unusable_pixels

log = logging.getLogger(__name__)

_SQUARE = np.ones((3, 3), bool)  # masks grow into all 8 neighbours


@dataclass
class FrameFormat:
    """Where a survey keeps a frame's planes and calibration (extension and keyword names).

    Extension lists are tried in order; the image falls back to the first HDU with 2-D data.
    A keyword that is missing uses its ``default_*`` value; a default of ``None`` makes it required.
    """

    image_hdu: list[str] = field(default_factory=lambda: ["IMAGE", "SCI"])
    variance_hdu: list[str] = field(default_factory=lambda: ["VARIANCE", "VAR"])
    weight_hdu: list[str] = field(default_factory=lambda: ["WEIGHT", "WHT"])
    mask_hdu: list[str] = field(default_factory=lambda: ["MASK", "DQ", "BPM"])
    gain: str = "GAIN"  # e-/ADU
    read_noise: str = "RDNOISE"  # e-
    saturation: str = "SATURATE"  # ADU
    zero_point: str = "MAGZP"  # mag of 1 ADU
    band: str = "FILTER"
    mjd: str = "MJD-OBS"  # d
    date: str = "DATE-OBS"  # ISO time, used when ``mjd`` is missing
    survey: str = "SURVEY"
    background_subtracted: str = "BKGSUB"
    default_gain: float | None = 1.0
    default_read_noise: float = 0.0
    default_saturation: float = float("inf")
    default_band: str | None = None
    default_survey: str = "unknown"
    saturation_grow: int = 1  # px by which saturated areas are grown

    def __post_init__(self) -> None:  # Hydra passes ListConfigs
        for name in ("image_hdu", "variance_hdu", "weight_hdu", "mask_hdu"):
            setattr(self, name, [str(n).upper() for n in getattr(self, name)])


def _find_hdu(hdul: fits.HDUList, names: list[str]) -> fits.ImageHDU | None:
    for name in names:
        if name in hdul and getattr(hdul[name], "data", None) is not None:
            return hdul[name]
    return None


def _plane(path: Path, hdu: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    data = np.asarray(hdu.data)
    if data.ndim != 2:
        raise FitsFormatError(f"{path}: extension {hdu.name!r} must be a 2-D image, got shape {data.shape}")
    if shape is not None and data.shape != shape:
        raise FitsFormatError(
            f"{path}: extension {hdu.name!r} has shape {data.shape}, but the image has shape {shape}"
        )
    return _native(data)


def _external_plane(path: str | os.PathLike, shape: tuple[int, ...]) -> np.ndarray:
    """The first 2-D plane of a separate file (a variance, weight or mask file)."""
    path = Path(path)
    with _open_fits(path) as hdul:
        hdu = next((h for h in hdul if getattr(h, "data", None) is not None and h.data.ndim == 2), None)
        if hdu is None:
            raise FitsFormatError(f"{path}: no 2-D image in any extension")
        return _plane(path, hdu, shape)


def _mjd(path: Path, keys: _Keywords, fmt: FrameFormat) -> float:
    if fmt.mjd in keys:
        return keys.get(fmt.mjd, float)
    if fmt.date in keys:
        value = keys.get(fmt.date, str)
        try:
            return float(Time(value, scale="utc").mjd)
        except ValueError as err:
            raise FitsFormatError(f"{path}: keyword {fmt.date!r} = {value!r} is not an ISO time") from err
    return float("nan")


def read_frame(
    path: str | os.PathLike,
    fmt: FrameFormat | None = None,
    *,
    variance: str | os.PathLike | None = None,
    weight: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
) -> Exposure:
    """Read a survey frame as an :class:`Exposure` (see the module docstring for what is done).

    Args:
        path: the FITS frame (image, celestial WCS, keywords; optional variance, weight and mask
            extensions named in ``fmt``).
        fmt: extension and keyword names; default :class:`FrameFormat`.
        variance, weight, mask: separate files with these planes (override the extensions).

    The PSF of the returned exposure is a placeholder until :func:`with_estimated_psf`;
    ``zero_point`` is NaN where the header has none (``meta["zero_point_source"]`` says which).
    Repairs are listed in ``meta["repairs"]``.

    Raises:
        FitsFormatError: a missing, corrupt or malformed file, a frame without a celestial WCS, a
            missing required keyword, a plane whose shape differs from the image's.
    """
    fmt = fmt or FrameFormat()
    path = Path(path)
    repairs: list[str] = []
    with _open_fits(path) as hdul:
        hdu = _find_hdu(hdul, fmt.image_hdu) or next(
            (h for h in hdul if getattr(h, "data", None) is not None and np.ndim(h.data) == 2), None
        )
        if hdu is None:
            raise FitsFormatError(f"{path}: no 2-D image (extensions tried: {', '.join(fmt.image_hdu)})")
        image = _plane(path, hdu).astype(np.float32)
        keys = _Keywords(path, hdul[0].header, hdu.header)
        wcs = _read_wcs(path, hdu.header, hdu.name)
        shape = image.shape
        var_hdu, wht_hdu, mask_hdu = (
            _find_hdu(hdul, n) for n in (fmt.variance_hdu, fmt.weight_hdu, fmt.mask_hdu)
        )
        var = _plane(path, var_hdu, shape) if var_hdu is not None and variance is None else None
        wht = _plane(path, wht_hdu, shape) if wht_hdu is not None and weight is None else None
        raw_mask = _plane(path, mask_hdu, shape) if mask_hdu is not None and mask is None else None
        own_bits = mask_hdu is not None and any(k.startswith("MASKBIT") for k in mask_hdu.header)
        gain = keys.get(fmt.gain, float, fmt.default_gain)
        if gain is None or not gain > 0:
            raise FitsFormatError(f"{path}: keyword {fmt.gain!r} missing or not positive (gain, e-/ADU)")
        read_noise = keys.get(fmt.read_noise, float, fmt.default_read_noise)
        saturation = keys.get(fmt.saturation, float, fmt.default_saturation)
        zero_point = keys.get(fmt.zero_point, float, float("nan"))
        band = keys.get(fmt.band, str, fmt.default_band)
        if band is None:
            raise FitsFormatError(f"{path}: keyword {fmt.band!r} (band) missing")
        survey = keys.get(fmt.survey, str, fmt.default_survey)
        mjd = _mjd(path, keys, fmt)
        bkgsub = keys.get(fmt.background_subtracted, bool, False)
    var = _native(_external_plane(variance, shape)) if variance is not None else var
    wht = _native(_external_plane(weight, shape)) if weight is not None else wht
    if mask is not None:
        raw_mask, own_bits = _external_plane(mask, shape), False

    bits = np.zeros(shape, np.uint16)
    if raw_mask is not None:
        if own_bits:
            bits |= raw_mask.astype(np.uint16)
        else:
            bits[raw_mask != 0] |= Mask.BAD
    no_data = ~np.isfinite(image) | ((bits & Mask.NO_DATA) != 0)
    if np.isfinite(saturation):
        saturated = np.nan_to_num(image, nan=-np.inf) >= saturation
        if fmt.saturation_grow > 0 and saturated.any():
            saturated = ndimage.binary_dilation(saturated, _SQUARE, iterations=fmt.saturation_grow)
        bits[saturated] |= Mask.SATURATED
    if var is None and wht is not None:
        with np.errstate(divide="ignore"):
            var = np.where(wht > 0, 1.0 / wht, np.nan)
        repairs.append("VARIANCE: 1 / weight")
    if var is None:
        var = _model_variance(image, no_data | ((bits & Mask.SATURATED) != 0), gain)
        repairs.append("VARIANCE: modelled (sky rms^2 + source Poisson / gain)")
    var = np.asarray(var, np.float32)
    bad_var = ~no_data & ~(np.isfinite(var) & (var > 0))
    if bad_var.any():
        repairs.append(f"VARIANCE: {int(bad_var.sum())} non-positive or non-finite pixels masked NO_DATA")
        no_data |= bad_var
    bits[no_data] |= Mask.NO_DATA
    image = np.where(no_data, np.nan, image).astype(np.float32)
    var = _fill_invalid(var, no_data)
    if repairs:
        log.info("%s: %s", path, "; ".join(repairs))
    return Exposure(
        image=image,
        variance=var,
        mask=bits,
        psf=_UNKNOWN_PSF,
        wcs=wcs,
        zero_point=zero_point if np.isfinite(zero_point) else 0.0,
        gain=gain,
        saturation=saturation,
        survey=survey,
        band=band,
        mjd=mjd,
        background_subtracted=bkgsub,
        source=str(path),
        meta={
            "repairs": repairs,
            "read_noise": read_noise,
            "zero_point_source": "header" if np.isfinite(zero_point) else "none",
            "psf_source": "none",
        },
    )


#: The PSF of a frame before :func:`with_estimated_psf` (a delta function; never used to measure).
_UNKNOWN_PSF = ImagePSF(kernel=np.pad(np.ones((1, 1)), 1))


def _fill_invalid(variance: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """``variance`` with the median valid variance where ``invalid`` (those pixels are NaN in the image
    and carry ``NO_DATA``; a finite variance keeps convolutions over them finite)."""
    fill = float(np.median(variance[~invalid])) if (~invalid).any() else 1.0
    return np.where(invalid, fill, variance).astype(np.float32)


def _model_variance(image: np.ndarray, invalid: np.ndarray, gain: float) -> np.ndarray:
    """Sky variance from sep's background rms map plus the sources' Poisson variance (ADU^2)."""
    data = np.ascontiguousarray(np.where(invalid, 0.0, image), dtype=np.float32)
    bkg = sep.Background(data, mask=invalid)
    sky, rms = bkg.back(), bkg.rms()
    return (rms**2 + np.maximum(data - sky, 0.0) / gain).astype(np.float32)


def pixel_scale(wcs: WCS) -> float:
    """Mean pixel scale (arcsec / px) of a celestial WCS."""
    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def _stars(exposure: Exposure, half_size: int) -> pd.DataFrame:
    selection = StarSelection(point_like=True, isolation_radius=half_size / 2, snr_min=30.0)
    stars = select_stars(exposure, half_size=half_size, selection=selection)
    if len(stars):
        fwhm = 2.0 * float(np.median(stars["r50"]))  # sep's half-light radius of a Gaussian is FWHM / 2
        stars["x"], stars["y"] = centroids(exposure, stars["x"].to_numpy(), stars["y"].to_numpy(), fwhm)
        stars.attrs["fwhm"] = fwhm
    return stars


def with_estimated_psf(exposure: Exposure, *, size: int = 31, min_stars: int = 10) -> Exposure:
    """``exposure`` with its sky removed (where it is not yet) and the PSF stacked from its own stars
    (an :class:`ImagePSF`, ``size`` px).

    Raises:
        InvalidExposureError: fewer than ``min_stars`` usable stars (naming the file).
    """
    exposure = subtract_background(exposure)
    stars = _stars(exposure, size // 2 + 3)
    if len(stars) < min_stars:
        raise InvalidExposureError(
            f"{exposure.source}: field 'image' has {len(stars)} usable stars for PSF estimation, but "
            f"{min_stars} are needed (bright, isolated, unsaturated, point-like)"
        )
    kernel = estimate_psf(
        exposure, stars, size, fwhm=stars.attrs["fwhm"], min_stars=min_stars, recentre=False
    )
    meta = {**exposure.meta, "psf_source": "estimated", "psf_stars": len(stars)}
    return replace(exposure, psf=ImagePSF(kernel=kernel), meta=meta)


def fit_zero_point(
    exposure: Exposure,
    catalog: pd.DataFrame,
    *,
    match_radius: float = 2.0,
    mag_column: str = "mag",
    min_stars: int = 5,
) -> tuple[float, float, int]:
    """Zero point (mag of 1 ADU) of ``exposure`` (PSF estimated, sky removed) against a catalogue.

    The frame's stars are matched to ``catalog`` (columns ``ra``, ``dec`` in deg and ``mag_column``)
    within ``match_radius`` arcsec; the zero point is the 3-sigma clipped median of
    ``mag + 2.5 log10(flux)`` over the matches, flux from PSF fits. Returns (zero point, its
    standard error in mag, matches used).

    Raises:
        InvalidExposureError: fewer than ``min_stars`` matched stars.
    """
    for col in ("ra", "dec", mag_column):
        if col not in catalog.columns:
            raise InvalidExposureError(f"catalogue: column {col!r} missing (zero point of {exposure.source})")
    kernel = exposure.psf.image_at(0.0, 0.0, 15)
    stars = _stars(exposure, 10)
    invalid = unusable_pixels([exposure])
    flux, _ = psf_fluxes(
        exposure.image, exposure.variance, invalid, stars["x"].to_numpy(), stars["y"].to_numpy(), kernel
    )
    cx, cy = exposure.wcs.all_world2pix(catalog["ra"].to_numpy(float), catalog["dec"].to_numpy(float), 0)
    ok = np.isfinite(cx) & np.isfinite(cy) & np.isfinite(catalog[mag_column].to_numpy(float))
    d, j = cKDTree(np.c_[cx[ok], cy[ok]]).query(np.c_[stars["x"], stars["y"]]) if ok.any() else (None, None)
    zps = np.zeros(0)
    if d is not None:
        good = (d * pixel_scale(exposure.wcs) < match_radius) & (flux > 0)
        zps = catalog[mag_column].to_numpy(float)[ok][j[good]] + 2.5 * np.log10(flux[good])
    for _ in range(3):
        if len(zps) < min_stars:
            break
        med, sig = np.median(zps), 1.4826 * np.median(np.abs(zps - np.median(zps)))
        zps = zps[np.abs(zps - med) <= 3.0 * max(sig, 1e-3)]
    if len(zps) < min_stars:
        raise InvalidExposureError(
            f"{exposure.source}: field 'zero_point': {len(zps)} stars matched the catalogue within "
            f"{match_radius} arcsec, but {min_stars} are needed to fit it"
        )
    err = 1.2533 * np.std(zps) / np.sqrt(len(zps))
    return float(np.median(zps)), float(err), len(zps)


def same_grid(a: Exposure, b: Exposure, tolerance: float = 0.05) -> bool:
    """Whether ``b``'s pixels lie on ``a``'s within ``tolerance`` px (shape and WCS, 5x5 points)."""
    if a.shape != b.shape:
        return False
    ny, nx = a.shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 5))
    ra, dec = a.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    bx, by = b.wcs.all_world2pix(ra, dec, 0)
    return bool(np.all(np.hypot(bx - gx.ravel(), by - gy.ravel()) < tolerance))


def overlap_fraction(science: Exposure, reference: Exposure, samples: int = 32) -> float:
    """Fraction of the science frame that falls inside the reference frame (on a grid of samples)."""
    ny, nx = science.shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, samples), np.linspace(0, ny - 1, samples))
    ra, dec = science.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rx, ry = reference.wcs.all_world2pix(ra, dec, 0, quiet=True)
    rny, rnx = reference.shape
    inside = (rx > -0.5) & (ry > -0.5) & (rx < rnx - 0.5) & (ry < rny - 0.5)
    return float(inside.mean())


def reproject_onto(reference: Exposure, science: Exposure, *, order: str = "bilinear") -> Exposure:
    """``reference`` resampled onto ``science``'s pixel grid with ``reproject.reproject_interp``.

    Image, variance and one 0/1 plane per mask bit are interpolated with ``order`` in one call, so
    the coordinate transformation is computed once. A resampled pixel carries every mask bit that
    any input pixel within the interpolation's reach carries, and ``NO_DATA`` where it touches a
    pixel without data or lies outside the reference. Interpolation correlates the noise of
    neighbouring pixels: the per-pixel variance is interpolated as it is, an overestimate of the
    resampled pixel's by up to ~2x for bilinear, so detection thresholds err on the safe side. The
    PSF must be estimated again on the result (the resampling broadens it).
    """
    from reproject import reproject_interp

    valid = reference.valid()
    bits = [b for b in (Mask.BAD, Mask.SATURATED, Mask.EDGE) if (reference.mask & b).any()]
    planes = [np.where(valid, reference.image, np.nan), np.where(valid, reference.variance, np.nan)]
    planes += [((reference.mask & b) != 0).astype(np.float32) for b in bits]
    out, footprint = reproject_interp(
        (np.stack(planes).astype(np.float32), reference.wcs),
        output_projection=science.wcs,
        shape_out=science.shape,
        order=order,
        roundtrip_coords=False,  # the WCSs are celestial 2-D: both directions are defined
    )
    image, variance, footprint = out[0], out[1], footprint.reshape(-1, *science.shape)[0]
    mask = np.zeros(science.shape, np.uint16)
    for b, plane in zip(bits, out[2:], strict=True):
        mask[np.nan_to_num(plane) > 1e-3] |= b
    no_data = (footprint <= 0) | ~np.isfinite(image) | ~np.isfinite(variance) | ~(variance > 0)
    mask[no_data] |= Mask.NO_DATA
    return replace(
        reference,
        image=np.where(no_data, np.nan, image).astype(np.float32),
        variance=_fill_invalid(variance, no_data),
        mask=mask,
        wcs=science.wcs,
        psf=_UNKNOWN_PSF,
        meta={**reference.meta, "reprojected": True, "reproject_order": order},
    )
