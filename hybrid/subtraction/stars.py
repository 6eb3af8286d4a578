"""Bright, isolated, unsaturated stars found in an exposure: the stamps that PSF matching (Alard &
Lupton 1998), empirical PSF estimation and the photometric flux-ratio fit are measured on.

Stars are detected with sep (Barbary 2016, JOSS 1, 58) on one exposure, usually the deep reference,
and kept where a stamp around them is usable in every exposure of the pair:

* no masked pixel (``NO_DATA``, ``SATURATED``, ``BAD``) within ``half_size`` pixels (plus ``border``)
  in any of the exposures, and the stamp inside the frame;
* peak below ``saturation_fraction`` of each exposure's saturation level (non-linearity sets in
  before the hard limit);
* isolated: no other detection brighter than ``isolation_contrast`` times the star within
  ``isolation_radius`` pixels, and no sep flag other than "deblended" (truncated, overflow);
* optionally point-like: a half-light radius (sep's ``flux_radius``) within ``max_size_ratio`` of
  the stellar locus, which rejects the compact galaxies that pass the other cuts. The half-light
  radius of a point source does not depend on its brightness, unlike the isophotal second moments
  (sep's ``a``, ``b``), which grow with it: measured against the median of the second moments,
  the bright stars of sparse frames looked extended and were lost. The locus is the median radius
  of the smaller half of the candidates, so that galaxies, even where they are half of the
  candidates, do not pull it;
* at least ``snr_min`` in a circular aperture of radius ``2 FWHM`` (:mod:`hybrid.photometry`; an
  aperture that touches a masked pixel or leaves the frame has no S/N).

The brightest survivors are taken cell by cell on a ``cells x cells`` grid so that a spatially
varying fit sees the whole frame, not only its richest corner. Positions are 0-based pixels, numpy
order ``[y, x]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sep
from scipy import ndimage
from scipy.spatial import cKDTree

from hybrid.exposure import Exposure, InvalidExposureError, Mask
from hybrid.photometry import aperture_fluxes

# crowded frames need more than sep's default pixel stack; the setting is process-wide in sep
sep.set_extract_pixstack(2_000_000)

UNUSABLE = Mask.NO_DATA | Mask.SATURATED | Mask.BAD


@dataclass(frozen=True)
class StarSelection:
    """Which detections count as usable stars.

    Args:
        threshold: sep detection threshold (sigma of the per-pixel noise).
        min_area: minimum connected pixels of a detection.
        snr_min: minimum aperture S/N of a selected star.
        max_stars: at most this many stars, the brightest, spread over the grid cells.
        cells: the frame is split into ``cells x cells`` cells that share ``max_stars`` evenly.
        isolation_radius: radius (pixels) within which no brighter-than-``isolation_contrast``
            neighbour may lie; ``None``: ``half_size``.
        isolation_contrast: neighbour flux / star flux above which a neighbour spoils the star.
        saturation_fraction: a star's peak must stay below this fraction of each exposure's
            saturation level.
        point_like: reject detections whose half-light radius exceeds ``max_size_ratio`` x the
            stellar locus (the median radius of the smaller half of the candidates).
        max_size_ratio: see ``point_like``.
        snr_in_all: require ``snr_min`` in every exposure, not only in the one detected on.
    """

    threshold: float = 5.0
    min_area: int = 5
    snr_min: float = 30.0
    max_stars: int = 160
    cells: int = 4
    isolation_radius: float | None = None
    isolation_contrast: float = 0.1
    saturation_fraction: float = 0.7
    point_like: bool = False
    max_size_ratio: float = 1.3
    snr_in_all: bool = False


def unusable_pixels(exposures: Sequence[Exposure]) -> np.ndarray:
    """Pixels not to measure on in any of ``exposures``: masked ``UNUSABLE`` or not finite."""
    bad = np.zeros(exposures[0].shape, bool)
    for exp in exposures:
        bad |= (exp.mask & UNUSABLE) != 0
        bad |= ~np.isfinite(exp.image)
    return bad


def detect_sources(exposure: Exposure, threshold: float, min_area: int, invalid: np.ndarray) -> np.ndarray:
    """sep catalogue of ``exposure`` (background subtracted) with pixels ``invalid`` masked."""
    data = np.ascontiguousarray(np.where(invalid, 0.0, exposure.image), dtype=np.float32)
    var = np.where(invalid | ~np.isfinite(exposure.variance), 1.0, exposure.variance)
    err = np.ascontiguousarray(np.sqrt(np.maximum(var, 1e-30)), dtype=np.float32)
    return sep.extract(
        data, threshold, err=err, mask=invalid, minarea=min_area, deblend_cont=0.005, segmentation_map=False
    )


def select_stars(
    detect_on: Exposure,
    others: Sequence[Exposure] = (),
    *,
    half_size: int,
    border: int = 0,
    selection: StarSelection | None = None,
    fwhm: float | None = None,
) -> pd.DataFrame:
    """Usable stars of ``detect_on`` whose stamps are clean in it and in ``others``.

    Args:
        detect_on: the exposure to detect stars on (background subtracted).
        others: exposures on the same pixel grid whose masks and saturation also apply.
        half_size: half side (pixels) of the stamp that must be clean around each star.
        border: extra clean margin (pixels) around the stamp, e.g. a convolution kernel's half size.
        selection: the cuts; defaults of :class:`StarSelection`.
        fwhm: PSF FWHM (pixels) for the aperture; ``None``: from the detections' second moments.

    Returns:
        Table with columns ``x``, ``y`` (pixels), ``flux`` and ``flux_err`` (aperture, ADU of
        ``detect_on``), ``snr`` (the lowest over the exposures with ``snr_in_all``), ``peak`` and
        ``size`` (isophotal second-moment radius, pixels; grows with brightness), ``r50``
        (half-light radius, pixels), brightest first. It may be empty; callers decide how many
        stars they need.
    """
    sel = selection or StarSelection()
    exposures = [detect_on, *others]
    ny, nx = detect_on.shape
    invalid = unusable_pixels(exposures)
    objs = detect_sources(detect_on, sel.threshold, sel.min_area, invalid)
    empty = pd.DataFrame(columns=["x", "y", "flux", "flux_err", "snr", "peak", "size", "r50"], dtype=float)
    if len(objs) == 0:
        return empty
    x, y = objs["x"].astype(float), objs["y"].astype(float)
    size = np.sqrt(np.maximum(objs["a"] * objs["b"], 1e-6)).astype(float)
    if fwhm is None:
        bright = np.argsort(-objs["flux"])[:50]
        fwhm = float(2.3548 * np.median(size[bright]))
    fwhm = max(float(fwhm), 1.0)

    reach = half_size + border
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    ok = (ix - reach >= 0) & (iy - reach >= 0) & (ix + reach < nx) & (iy + reach < ny)
    ok &= (objs["flag"] & ~np.int16(1)) == 0  # deblended (flag 1) is fine: neighbours are judged below
    # a masked pixel anywhere in the stamp (and its border) spoils the star
    grown = ndimage.maximum_filter(invalid.view(np.uint8), size=2 * reach + 1, mode="constant")
    ok &= grown[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)] == 0
    for exp in exposures:
        if np.isfinite(exp.saturation):
            peak = exp.image[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)]
            ok &= np.maximum(objs["peak"], peak) < sel.saturation_fraction * exp.saturation

    radius = sel.isolation_radius if sel.isolation_radius is not None else float(half_size)
    if radius > 0 and len(objs) > 1:
        tree = cKDTree(np.column_stack([x, y]))
        flux = objs["flux"]
        cand = np.flatnonzero(ok)
        neighbours = tree.query_ball_point(np.column_stack([x[cand], y[cand]]), radius)
        for i, near in zip(cand, neighbours, strict=True):
            if any(j != i and flux[j] > sel.isolation_contrast * flux[i] for j in near):
                ok[i] = False
    # aperture S/N before the half-light radii, which cost more and are only needed for the survivors
    flux, flux_err, snr = (np.full(len(objs), np.nan) for _ in range(3))
    if ok.any():
        flux[ok], flux_err[ok] = aperture_fluxes(
            detect_on.image, detect_on.variance, invalid, x[ok], y[ok], 2.0 * fwhm
        )
        snr[ok] = flux[ok] / np.maximum(flux_err[ok], 1e-30)
        if sel.snr_in_all:
            for exp in others:
                f, e = aperture_fluxes(exp.image, exp.variance, invalid, x[ok], y[ok], 2.0 * fwhm)
                snr[ok] = np.minimum(snr[ok], f / np.maximum(e, 1e-30))
        ok &= snr >= sel.snr_min
    r50 = np.full(len(objs), np.nan)
    if ok.any():
        r50[ok] = half_light_radius(detect_on, invalid, x[ok], y[ok], max(3.0 * fwhm, 6.0))
        ok &= np.isfinite(r50) & (r50 > 0)
    if sel.point_like and ok.any():
        radii = r50[ok]
        locus = float(np.median(radii[radii <= np.median(radii)]))
        ok &= r50 < sel.max_size_ratio * locus

    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return empty
    table = pd.DataFrame(
        {
            "x": x[idx],
            "y": y[idx],
            "flux": flux[idx],
            "flux_err": flux_err[idx],
            "snr": snr[idx],
            "peak": objs["peak"][idx].astype(float),
            "size": size[idx],
            "r50": r50[idx],
        }
    )
    table = table.sort_values("flux", ascending=False, ignore_index=True)
    return _spread(table, (ny, nx), sel.cells, sel.max_stars)


def half_light_radius(
    exposure: Exposure, invalid: np.ndarray, x: np.ndarray, y: np.ndarray, rmax: float
) -> np.ndarray:
    """Radius (pixels) containing half of the flux within ``rmax`` (sep's ``flux_radius``); NaN where
    sep flags the measurement."""
    data = np.ascontiguousarray(np.where(invalid, 0.0, exposure.image), dtype=np.float32)
    xs, ys = np.array(x, dtype=float), np.array(y, dtype=float)
    r, flag = sep.flux_radius(data, xs, ys, np.full(len(xs), float(rmax)), 0.5, subpix=5)
    return np.where(flag == 0, r, np.nan)


def _spread(table: pd.DataFrame, shape: tuple[int, int], cells: int, max_stars: int) -> pd.DataFrame:
    """The brightest ``max_stars`` rows, at most an even share per grid cell while cells have stars."""
    if len(table) <= max_stars:
        return table
    ny, nx = shape
    row = np.minimum(table["y"].to_numpy() * cells // ny, cells - 1)
    col = np.minimum(table["x"].to_numpy() * cells // nx, cells - 1)
    cell = (row * cells + col).astype(int)
    rank = table.groupby(cell).cumcount()  # 0 for the brightest star of each cell
    order = np.lexsort((-table["flux"].to_numpy(), rank.to_numpy()))  # round-robin over cells
    return table.iloc[np.sort(order[:max_stars])].reset_index(drop=True)


def require_stars(stars: pd.DataFrame, needed: int, exposure: Exposure, purpose: str) -> None:
    """Raise :class:`InvalidExposureError` naming ``exposure`` when fewer than ``needed`` stars remain."""
    if len(stars) == 0:
        raise InvalidExposureError(
            f"{exposure.source}: field 'image' has no usable stars for {purpose} (bright, isolated, "
            "unsaturated and away from masked pixels and edges in both exposures)"
        )
    if len(stars) < needed:
        raise InvalidExposureError(
            f"{exposure.source}: field 'image' has {len(stars)} usable stars for {purpose}, "
            f"but {needed} are needed"
        )
