"""Instrumental and processing artifacts, each recorded in an artifact map for the labellers.

* cosmic rays: tracks of deposited charge, not convolved with the PSF, in single exposures only
  (references are clipped stacks); hit rate per cm^2 per second of detector (Groom 2002, Exp. Astron.
  14, 45: ~1-2 muons cm^-2 min^-1 at sea level plus radioactivity in the dewar);
* hot pixels and bad columns: fixed per detector, some known (masked) and some not;
* saturation with bleed trails: charge above full well spills along the column (read-out direction);
* astrometric misregistration: a smooth residual shift between science and reference, which turns
  every bright star into a dipole after subtraction;
* missing data: a strip of the reference footprint that does not cover the science frame.

PSF-mismatch residuals and residuals of bright galaxies are not drawn here: they arise in subtraction
because the PSF varies across the field while subtraction assumes one PSF per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy import ndimage

from hybrid.exposure import Mask


class Artifact(IntEnum):
    """Codes of the per-pixel artifact map (uint8)."""

    NONE = 0
    COSMIC_RAY = 1
    HOT_PIXEL = 2
    BAD_COLUMN = 3
    SATURATION = 4


@dataclass(frozen=True)
class ArtifactConfig:
    """Rates and amplitudes; amplitudes of detector defects are in units of the sky noise."""

    cosmic_ray_rate: float = 0.05  # hits / cm^2 / s
    cosmic_ray_charge: float = 4000.0  # e-, median charge of one track
    hot_pixel_fraction: float = 3e-5
    hot_pixel_known_fraction: float = 0.7
    hot_pixel_amplitude: float = 20.0  # median, sky sigmas
    bad_columns_per_frame: float = 0.7
    bad_column_known_fraction: float = 0.5
    bad_column_amplitude: float = 4.0  # sky sigmas
    misregistration_sigma: float = 0.04  # px, global shift
    misregistration_gradient: float = 0.08  # px, across the frame
    no_data_probability: float = 0.3
    no_data_width: tuple[int, int] = (5, 60)  # px
    edge_margin: int = 4  # px


@dataclass
class DetectorDefects:
    """The fixed defects of one detector: hot pixels and bad columns (positions and amplitudes)."""

    hot_y: np.ndarray
    hot_x: np.ndarray
    hot_amplitude: np.ndarray
    hot_known: np.ndarray
    column_x: np.ndarray
    column_y0: np.ndarray
    column_y1: np.ndarray
    column_amplitude: np.ndarray
    column_known: np.ndarray


def draw_defects(rng: np.random.Generator, cfg: ArtifactConfig, shape: tuple[int, int]) -> DetectorDefects:
    ny, nx = shape
    n_hot = rng.poisson(cfg.hot_pixel_fraction * nx * ny)
    n_col = rng.poisson(cfg.bad_columns_per_frame)
    y0 = rng.integers(0, ny, n_col)
    return DetectorDefects(
        hot_y=rng.integers(0, ny, n_hot),
        hot_x=rng.integers(0, nx, n_hot),
        hot_amplitude=cfg.hot_pixel_amplitude * 10 ** rng.normal(0, 0.4, n_hot),
        hot_known=rng.uniform(size=n_hot) < cfg.hot_pixel_known_fraction,
        column_x=rng.integers(0, nx, n_col),
        column_y0=y0,
        column_y1=np.minimum(ny, y0 + rng.integers(ny // 8, ny, n_col)),
        column_amplitude=cfg.bad_column_amplitude
        * rng.choice([-1.0, 1.0], n_col)
        * rng.uniform(0.5, 2, n_col),
        column_known=rng.uniform(size=n_col) < cfg.bad_column_known_fraction,
    )


def apply_defects(
    image: np.ndarray, mask: np.ndarray, amap: np.ndarray, defects: DetectorDefects, sky_sigma: float
) -> None:
    """Add hot pixels and bad columns (ADU) to a science image; mask the known ones."""
    image[defects.hot_y, defects.hot_x] += defects.hot_amplitude * sky_sigma
    amap[defects.hot_y, defects.hot_x] = Artifact.HOT_PIXEL
    mask[defects.hot_y[defects.hot_known], defects.hot_x[defects.hot_known]] |= Mask.BAD
    for x, y0, y1, amp, known in zip(
        defects.column_x,
        defects.column_y0,
        defects.column_y1,
        defects.column_amplitude,
        defects.column_known,
        strict=True,
    ):
        image[y0:y1, x] += amp * sky_sigma
        amap[y0:y1, x] = Artifact.BAD_COLUMN
        if known:
            mask[y0:y1, x] |= Mask.BAD


def add_cosmic_rays(
    rng: np.random.Generator,
    image: np.ndarray,
    amap: np.ndarray,
    cfg: ArtifactConfig,
    *,
    pixel_size_um: float,
    exposure_time: float,
    gain: float,
) -> int:
    """Add cosmic-ray tracks (ADU) to ``image``; returns the number of hits."""
    ny, nx = image.shape
    area_cm2 = nx * ny * (pixel_size_um * 1e-4) ** 2
    n = rng.poisson(cfg.cosmic_ray_rate * area_cm2 * exposure_time)
    for _ in range(n):
        length = rng.exponential(2.0) if rng.uniform() < 0.9 else rng.uniform(5, 25)  # a few long "worms"
        angle = rng.uniform(0, np.pi)
        x0, y0 = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1)
        k = max(1, int(length / 0.3))
        t = np.linspace(0, length, k)
        xs = np.clip(np.rint(x0 + t * np.cos(angle)).astype(int), 0, nx - 1)
        ys = np.clip(np.rint(y0 + t * np.sin(angle)).astype(int), 0, ny - 1)
        charge = cfg.cosmic_ray_charge * 10 ** rng.normal(0, 0.3) / gain
        np.add.at(image, (ys, xs), charge / k)
        amap[ys, xs] = Artifact.COSMIC_RAY
    return n


def saturate(image: np.ndarray, mask: np.ndarray, amap: np.ndarray | None, level: float) -> None:
    """Clip at the saturation level and bleed the excess charge up and down each column.

    The charge above ``level`` in each column of a saturated region is conserved: it fills
    neighbouring pixels of that column to ``level``, half upwards and half downwards.
    """
    over = image >= level
    if not over.any():
        return
    ny = image.shape[0]
    labels, _ = ndimage.label(over)
    for region in ndimage.find_objects(labels):
        ys, xs = region
        for x in range(xs.start, xs.stop):
            col = image[ys, x]
            sat = col >= level
            if not sat.any():
                continue
            excess = float((col[sat] - level).sum())
            rows = np.flatnonzero(sat) + ys.start
            extra = int(excess / level)
            lo = max(0, rows.min() - extra // 2 - extra % 2)
            hi = min(ny, rows.max() + 1 + extra // 2)
            image[lo:hi, x] = level
            mask[lo:hi, x] |= Mask.SATURATED
            if amap is not None:
                amap[lo:hi, x] = Artifact.SATURATION


def misregistration(
    rng: np.random.Generator, cfg: ArtifactConfig, shape: tuple[int, int]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A smooth field of residual pixel shifts of the reference: ``shift(x, y) -> (N, 2)`` (dx, dy)."""
    ny, nx = shape
    offset = rng.normal(0, cfg.misregistration_sigma, 2)
    grad = rng.normal(0, cfg.misregistration_gradient, (2, 2))

    def shift(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = (np.asarray(x, float) / nx - 0.5)[:, None]
        v = (np.asarray(y, float) / ny - 0.5)[:, None]
        return offset[None, :] + u * grad[0][None, :] + v * grad[1][None, :]

    return shift


def no_data_strip(rng: np.random.Generator, cfg: ArtifactConfig, shape: tuple[int, int]) -> np.ndarray:
    """Boolean map of reference pixels outside the reference footprint (an edge strip, or none)."""
    _ny, _nx = shape
    out = np.zeros(shape, bool)
    if rng.uniform() < cfg.no_data_probability:
        width = int(rng.integers(*cfg.no_data_width))
        side = int(rng.integers(4))
        if side == 0:
            out[:width, :] = True
        elif side == 1:
            out[-width:, :] = True
        elif side == 2:
            out[:, :width] = True
        else:
            out[:, -width:] = True
    return out


def edge_mask(shape: tuple[int, int], margin: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    if margin > 0:
        out[:margin, :] = out[-margin:, :] = out[:, :margin] = out[:, -margin:] = True
    return out
