"""Rendering of galaxies: pixel-integrated Sersic profiles convolved with the local PSF.

Stars and other point sources go through :func:`hybrid.psf.render_points`, exactly at their
positions. Galaxies are drawn once per field, unconvolved (each on its own stamp, oversampled where
its core is small compared with a pixel), and the whole galaxy image is then convolved with each
exposure's field-dependent PSF tile by tile -- a few FFTs per exposure instead of one per galaxy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.signal import fftconvolve

from hybrid.psf import MoffatPSF, add_stamp
from hybrid.sim.sky import sersic_b


def sersic_stamp(
    n: float, r_eff_px: float, axis_ratio: float, pa_deg: float, dx: float, dy: float, size: int
) -> np.ndarray:
    """Unit-sum Sersic profile on a ``size x size`` stamp, centred at sub-pixel offset (dx, dy).

    ``r_eff_px`` is the circularised half-light radius (pixels); the position angle is measured from
    +y towards -x (north through east on a north-up, east-left image).
    """
    oversample = 5 if r_eff_px < 2 else (3 if r_eff_px < 6 else 1)
    half = size // 2
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    grid = (np.arange(size)[:, None] - half + sub[None, :]).ravel()
    xx = grid[None, :] - dx
    yy = grid[:, None] - dy
    pa = np.deg2rad(pa_deg)
    u = -xx * np.sin(pa) + yy * np.cos(pa)  # along the major axis
    v = xx * np.cos(pa) + yy * np.sin(pa)
    a = r_eff_px / np.sqrt(axis_ratio)
    r = np.sqrt((u / a) ** 2 + (v / (a * axis_ratio)) ** 2)
    prof = np.exp(-sersic_b(np.asarray(n)) * (np.maximum(r, 1e-3) ** (1.0 / n) - 1.0))
    if oversample > 1:
        prof = prof.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return prof / prof.sum()


def galaxy_stamp_size(r_eff_px: float, fwhm_px: float, max_size: int = 257) -> int:
    """Odd stamp size holding ~4 R_e of light and the PSF wings."""
    return int(min(max_size, 2 * int(np.ceil(4.0 * r_eff_px + 2.5 * fwhm_px)) + 1))


def render_intrinsic_galaxies(image: np.ndarray, galaxies: pd.DataFrame, flux: np.ndarray) -> None:
    """Add the galaxies' unconvolved, pixel-integrated Sersic light (total ``flux``) to ``image``."""
    x, y = galaxies["x"].to_numpy(), galaxies["y"].to_numpy()
    cols = [galaxies[c].to_numpy() for c in ("sersic_n", "r_eff_px", "axis_ratio", "pa")]
    ny, nx = image.shape
    for i in range(len(galaxies)):
        n, r_eff, q, pa = (c[i] for c in cols)
        size = galaxy_stamp_size(r_eff, 0.0)
        cx, cy = int(np.rint(x[i])), int(np.rint(y[i]))
        if cx + size // 2 < 0 or cy + size // 2 < 0 or cx - size // 2 >= nx or cy - size // 2 >= ny:
            continue
        stamp = sersic_stamp(n, r_eff, q, pa, x[i] - cx, y[i] - cy, size) * flux[i]
        add_stamp(image, stamp.astype(np.float32), cx - size // 2, cy - size // 2)


def convolve_tiled(
    intrinsic: np.ndarray,
    psf: MoffatPSF,
    *,
    tile: int = 128,
    shift: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Convolve an image with a field-dependent PSF, piecewise constant over ``tile``-pixel tiles.

    Overlap-add: each tile's light is convolved with the PSF at the tile centre and spread into the
    output, so no flux is lost at tile borders. ``shift(x, y) -> (N, 2)`` moves the light of each
    tile by a sub-pixel (dx, dy), used to misregister the reference.
    """
    ny, nx = intrinsic.shape
    fwhm_max = psf.fwhm * (1 + sum(abs(s) for s in psf.fwhm_slope) + abs(psf.fwhm_curvature) * 2)
    half = int(np.ceil(4.0 * fwhm_max))
    size = 2 * half + 1
    out = np.zeros((ny + 2 * half, nx + 2 * half), np.float32)
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            block = intrinsic[y0 : y0 + tile, x0 : x0 + tile]
            if not block.any():
                continue
            cx, cy = x0 + block.shape[1] // 2, y0 + block.shape[0] // 2
            dx, dy = (0.0, 0.0) if shift is None else shift(np.array([cx]), np.array([cy]))[0]
            kernel = psf.stamps(np.array([cx + dx]), np.array([cy + dy]), size)[0][0]
            conv = fftconvolve(block, kernel / kernel.sum(), mode="full")
            out[y0 : y0 + conv.shape[0], x0 : x0 + conv.shape[1]] += conv
    return out[half : half + ny, half : half + nx]
