"""Stamp and feature harmonisation: put candidates of any survey into one common frame.

Surveys differ in pixel scale (Rubin 0.2"/px, ZTF 1.01", GOTO 1.24", ATLAS 1.86"), seeing, depth
and zero point. These pure functions map a survey's stamps and features to a common angular scale,
PSF width and noise unit, so that a model trained on one survey sees another's candidates as it saw
its own:

* :func:`resample_stamps` -- exact-area (flux-conserving) resampling to a common scale: each output
  pixel receives each input pixel's flux in proportion to their overlap, as in the "exact" mode of
  Montage and ``reproject`` (Jacob et al. 2010) and the pixel-overlap kernel of drizzle (Fruchter &
  Hook 2002) with a full-size drop;
* :func:`homogenize_psf` -- convolution with a Gaussian matching kernel whose width is solved
  numerically so that the measured FWHM of the survey's Moffat PSF, after resampling, reaches the
  target (PSF homogenisation as in the DES and HSC coadds; the Gaussian kernel of Alard & Lupton
  1998 in its simplest form);
* :func:`normalize_noise` -- pixels in units of the stamp's robust noise (1.4826 MAD);
* :func:`harmonize_features` -- features in common units (ADU fluxes to microjansky through the
  candidate's own zero point, pixel counts to fractions, pixel lengths to arcsec).

:class:`StampHarmonizer` chains the stamp functions; :func:`hybrid.adapters.dataset.harmonize_dataset`
applies it to a dataset directory. Nothing here learns from data: learned adaptation lives in
:mod:`hybrid.adapters.learned`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.optimize import brentq

from hybrid.detection.features import AB_ZERO_POINT_UJY
from hybrid.models.preprocessing import StampNormalizer
from hybrid.psf import MoffatPSF

#: Features counted over a box of pixels (ZTF's 5x5 nneg and nbad): name -> pixels in the box.
PIXEL_BOX_FEATURES = {"n_neg": 25, "n_bad": 25}


def overlap_matrix(
    n_in: int, scale_in: float, n_out: int, scale_out: float, *, method: str = "spline"
) -> np.ndarray:
    """One-dimensional flux-conserving resampling weights between two pixel grids with a common centre.

    The cumulative flux, known exactly at the input pixel edges, is interpolated to the output pixel
    edges and differenced. ``area`` interpolates it linearly, which is the exact pixel-overlap
    (piecewise-constant) resampling; ``spline`` uses a cubic spline, a piecewise-quadratic flux
    density that does not imprint the input pixel grid when a coarse grid is resampled to a finer one.
    Both conserve the flux within the overlap of the two grids exactly.

    Args:
        n_in, n_out: pixels of the input and output grids.
        scale_in, scale_out: their pixel sizes (arcsec / px).
        method: ``spline`` or ``area``.

    Returns:
        (n_out, n_in) weights: output = weights @ input along one axis.
    """
    e_in = (np.arange(n_in + 1) - n_in / 2) * scale_in
    e_out = np.clip((np.arange(n_out + 1) - n_out / 2) * scale_out, e_in[0], e_in[-1])
    if method == "area":
        lo = np.maximum(e_out[:-1, None], e_in[None, :-1])
        hi = np.minimum(e_out[1:, None], e_in[None, 1:])
        return np.clip(hi - lo, 0.0, None) / scale_in
    if method != "spline":
        raise ValueError(f"resampling method must be 'spline' or 'area', got {method!r}")
    cumulative = np.tril(np.ones((n_in + 1, n_in)), k=-1)  # flux left of each input edge
    at_out = CubicSpline(e_in, cumulative, axis=0)(e_out)
    return np.diff(at_out, axis=0)


def resample_stamps(
    stamps: np.ndarray,
    *,
    scale_in: float,
    scale_out: float,
    size_out: int,
    min_coverage: float = 0.5,
    method: str = "spline",
    chunk: int = 2048,
) -> np.ndarray:
    """Resample centred stamps to another pixel scale, conserving flux.

    Args:
        stamps: (..., H, W) in flux per pixel (ADU or any flux unit); NaN marks missing pixels.
        scale_in: input pixel scale (arcsec / px).
        scale_out: output pixel scale (arcsec / px).
        size_out: output stamp side (px).
        min_coverage: output pixels whose area is covered by less than this fraction of valid input
            pixels are NaN; partly covered ones are scaled up by the missing fraction.
        method: ``spline`` or ``area`` (see :func:`overlap_matrix`).
        chunk: stamps per matrix product (memory).

    Returns:
        (..., size_out, size_out) float32 in flux per output pixel: the total flux of a source inside
        both footprints is unchanged.
    """
    x = np.asarray(stamps, np.float32)
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    x = x.reshape(-1, h, w)
    ay = overlap_matrix(h, scale_in, size_out, scale_out, method=method)
    ax = overlap_matrix(w, scale_in, size_out, scale_out, method=method)
    # the geometric coverage of each output pixel by valid input pixels comes from the exact overlaps
    cy = overlap_matrix(h, scale_in, size_out, scale_out, method="area")
    cx = overlap_matrix(w, scale_in, size_out, scale_out, method="area")
    area = (scale_out / scale_in) ** 2  # input pixels per output pixel
    out = np.empty((len(x), size_out, size_out), np.float32)
    for i in range(0, len(x), chunk):
        xi = x[i : i + chunk].astype(np.float64)
        finite = np.isfinite(xi)
        flux = ay @ np.where(finite, xi, 0.0) @ ax.T
        cover = cy @ finite.astype(np.float64) @ cx.T
        ok = cover >= min_coverage * area
        out[i : i + chunk] = np.where(ok, flux * area / np.where(ok, cover, 1.0), np.nan)
    return out.reshape(*lead, size_out, size_out)


def measure_fwhm(image: np.ndarray, *, pixel_scale: float = 1.0, oversample: int = 8) -> float:
    """FWHM of one centred, background-free source (arcsec).

    The image is interpolated on a grid ``oversample`` times finer (cubic spline); the FWHM is the
    diameter of the circle with the area above half the peak, ``2 sqrt(A / pi)``, which is exact for
    round profiles and the geometric mean of the axes for elliptical ones.

    Args:
        image: (H, W) pixels of the source (NaN treated as 0).
        pixel_scale: arcsec / px.
        oversample: interpolation factor.
    """
    img = np.nan_to_num(np.asarray(image, np.float64))
    z = ndimage.zoom(img, oversample, order=3, grid_mode=True, mode="grid-constant")
    peak = z.max()
    if not peak > 0:
        raise ValueError("measure_fwhm: the image has no positive peak")
    area = (z >= peak / 2).sum() / oversample**2
    return float(2.0 * np.sqrt(area / np.pi) * pixel_scale)


def _model_psfs(fwhm: float, beta: float, scale_in: float, scale_out: float, size_out: int) -> np.ndarray:
    """The survey's round Moffat PSF (FWHM arcsec) rendered at ``scale_in`` and resampled to ``scale_out``,
    at a sub-pixel phase of 0 and of half a pixel: (2, size_out, size_out)."""
    n_in = 2 * int(np.ceil(size_out * scale_out / scale_in / 2)) + 1
    c = (n_in - 1) / 2
    psf = MoffatPSF(fwhm=fwhm / scale_in, beta=beta, shape=(n_in, n_in))
    stamps = psf.stamps(np.array([c, c + 0.5]), np.array([c, c + 0.5]), n_in)[0]
    return resample_stamps(stamps, scale_in=scale_in, scale_out=scale_out, size_out=size_out)


def matching_sigma(
    fwhm_in: float,
    fwhm_target: float,
    *,
    beta: float,
    scale_in: float,
    scale_out: float,
    size_out: int = 31,
) -> float:
    """Width (sigma, output px) of the Gaussian that takes a Moffat PSF to the target FWHM.

    The PSF of FWHM ``fwhm_in`` (arcsec) and index ``beta`` is rendered at the input scale, resampled
    to the output scale (which adds the output pixel's own blur), and the kernel width is solved
    (Brent's method) so that :func:`measure_fwhm` of the convolved PSF, averaged over a source at a
    pixel centre and one at a pixel corner, equals ``fwhm_target`` (arcsec). Undersampled PSFs (FWHM
    under about 2 input pixels, as ATLAS's) look broader or narrower with the source's sub-pixel
    position, so single stamps scatter around the target. Returns 0 when the PSF is already at least
    as broad as the target: PSFs are never sharpened (deconvolution amplifies noise).
    """
    base = _model_psfs(fwhm_in, beta, scale_in, scale_out, size_out)

    def excess(sigma: float) -> float:
        imgs = [ndimage.gaussian_filter(b, sigma) if sigma > 0 else b for b in base]
        return float(np.mean([measure_fwhm(i, pixel_scale=scale_out) for i in imgs])) - fwhm_target

    if excess(0.0) >= 0:
        return 0.0
    return float(brentq(excess, 0.0, fwhm_target / scale_out, xtol=1e-3))


def homogenize_psf(
    stamps: np.ndarray,
    fwhm: np.ndarray,
    *,
    fwhm_target: float,
    beta: float,
    scale_in: float,
    scale_out: float,
    grid: int = 24,
) -> tuple[np.ndarray, np.ndarray]:
    """Convolve each stamp with the Gaussian that brings its PSF to ``fwhm_target``.

    Args:
        stamps: (N, H, W) stamps already resampled to ``scale_out`` (flux per pixel, NaN missing).
        fwhm: (N,) PSF FWHM of each stamp before resampling (arcsec).
        fwhm_target: target FWHM (arcsec), as :func:`measure_fwhm` measures it at ``scale_out``.
        beta: Moffat index of the survey's PSF.
        scale_in: the stamps' original pixel scale (arcsec / px), which sets the PSF's pixel blur.
        scale_out: their present pixel scale (arcsec / px).
        grid: kernel widths are solved on this many FWHM values across the range and interpolated.

    Returns:
        The convolved stamps (float32, NaN where the input was NaN; flux is conserved) and a (N,)
        boolean array: whether the stamp reached the target (False where its PSF was already broader).
    """
    x = np.asarray(stamps, np.float32)
    fwhm = np.asarray(fwhm, float)
    if not np.isfinite(fwhm).all() or (fwhm <= 0).any():
        raise ValueError("homogenize_psf: every stamp needs a finite, positive PSF FWHM")
    lo, hi = float(fwhm.min()), float(fwhm.max())
    nodes = np.linspace(lo, hi, grid) if hi > lo * 1.001 else np.array([lo])
    size = x.shape[-1]
    sig_nodes = np.array(
        [
            matching_sigma(f, fwhm_target, beta=beta, scale_in=scale_in, scale_out=scale_out, size_out=size)
            for f in nodes
        ]
    )
    sigma = np.interp(fwhm, nodes, sig_nodes) if len(nodes) > 1 else np.full(len(x), sig_nodes[0])
    reached = sigma > 0
    out = x.copy()
    finite = np.isfinite(x)
    # missing pixels take the stamp's median while convolving, then go back to NaN
    med = np.nan_to_num(np.nanmedian(np.where(finite, x, np.nan).reshape(len(x), -1), axis=1))
    filled = np.where(finite, x, med[:, None, None])
    key = np.round(sigma, 2)
    for s in np.unique(key[reached]):
        sel = key == s
        out[sel] = ndimage.gaussian_filter(filled[sel], (0, s, s), mode="nearest")
    out[~finite] = np.nan
    return out, reached


def normalize_noise(stamps: np.ndarray) -> np.ndarray:
    """Each stamp minus its median, divided by its robust noise (1.4826 MAD): pixels in sigma.

    The same statistic as the model's ``noise`` normalisation (:class:`StampNormalizer`), without its
    clipping; NaN pixels stay NaN.
    """
    x = np.asarray(stamps, np.float32)
    z = StampNormalizer(mode="noise", crop=None, clip=float("inf"))(torch.from_numpy(x)).numpy()
    return np.where(np.isfinite(x), z, np.nan).astype(np.float32)


@dataclass(frozen=True)
class StampHarmonizer:
    """Resample to ``pixel_scale``, homogenise the PSF to ``fwhm``, normalise the noise.

    Args:
        pixel_scale: common pixel scale (arcsec / px).
        size: output stamp side (px); ``size * pixel_scale`` arcsec are kept around the candidate.
        fwhm: target PSF FWHM (arcsec), or None to keep each survey's PSF.
        noise: divide by the robust noise of each stamp (pixels in sigma).
        min_coverage: see :func:`resample_stamps`.
        beta: Moffat index used for the PSF model when the dataset does not record its survey's.
    """

    pixel_scale: float = 1.0
    size: int = 31
    fwhm: float | None = 3.5
    noise: bool = True
    min_coverage: float = 0.5
    beta: float = 3.0

    def __post_init__(self) -> None:
        if self.pixel_scale <= 0 or self.size < 3 or self.size % 2 == 0:
            raise ValueError(f"StampHarmonizer: need pixel_scale > 0 and an odd size >= 3, got {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(
        self, stamps: np.ndarray, fwhm: np.ndarray, *, pixel_scale: float, beta: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Harmonise (N, C, H, W) stamps (ADU, NaN missing) at ``pixel_scale`` arcsec / px.

        ``fwhm`` is (N, C): each channel's PSF FWHM (arcsec). Returns the (N, C, size, size) stamps
        (sigma units with ``noise``, else flux per output pixel) and (N, C) flags of the stamps whose
        PSF reached the target.
        """
        x = resample_stamps(
            stamps,
            scale_in=pixel_scale,
            scale_out=self.pixel_scale,
            size_out=self.size,
            min_coverage=self.min_coverage,
        )
        n, c = x.shape[:2]
        reached = np.ones((n, c), bool)
        if self.fwhm is not None:
            flat, ok = homogenize_psf(
                x.reshape(n * c, self.size, self.size),
                np.asarray(fwhm, float).reshape(n * c),
                fwhm_target=self.fwhm,
                beta=self.beta if beta is None else beta,
                scale_in=pixel_scale,
                scale_out=self.pixel_scale,
            )
            x, reached = flat.reshape(x.shape), ok.reshape(n, c)
        if self.noise:
            x = normalize_noise(x)
        return x, reached


def harmonize_features(
    table: pd.DataFrame, units: dict[str, str], *, pixel_scale: float, where: str = "candidates"
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Features in common units; returns the converted table and the new unit of each feature.

    * ``adu`` -> ``uJy``: ``f_uJy = f_adu 10^(0.4 (23.9 - zp))`` with each candidate's own zero point
      ``zp = mag_psf + 2.5 log10 |flux_psf|`` (the one its magnitude was computed with);
    * pixel counts over ZTF's 5x5 box (``n_neg``, ``n_bad``) -> fractions of the box;
    * ``px`` -> ``arcsec``;
    * every other unit (mag, arcsec, sigma, bool, counts of objects, dimensionless) is unchanged.

    Args:
        table: candidate table with the feature columns.
        units: feature name -> unit (meta.json ``features``).
        pixel_scale: arcsec / px of the survey the table came from.
        where: the file the table came from, for error messages.
    """
    out = table.copy()
    new_units = dict(units)
    adu = [f for f, u in units.items() if u.lower() == "adu"]
    if adu:
        for col in ("mag_psf", "flux_psf"):
            if col not in table.columns:
                raise KeyError(f"{where}: column {col!r} is needed to convert {adu} from ADU to uJy")
        flux = table["flux_psf"].to_numpy(float)
        zp = table["mag_psf"].to_numpy(float) + 2.5 * np.log10(np.maximum(np.abs(flux), 1e-6))
        factor = 10 ** (0.4 * (AB_ZERO_POINT_UJY - zp))
        for f in adu:
            out[f] = table[f].to_numpy(float) * factor
            new_units[f] = "uJy"
    for f, n_pix in PIXEL_BOX_FEATURES.items():
        if f in units and units[f] == "count":
            out[f] = table[f].to_numpy(float) / n_pix
            new_units[f] = f"fraction of a {int(np.sqrt(n_pix))}x{int(np.sqrt(n_pix))} px box"
    for f, u in units.items():
        if u.lower() in ("px", "pixel", "pixels"):
            out[f] = table[f].to_numpy(float) * pixel_scale
            new_units[f] = "arcsec"
    return out, new_units
