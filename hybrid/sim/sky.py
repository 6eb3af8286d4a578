"""The static sky of a simulated field: stars, Sersic galaxies, and the catalogue a survey would have.

Populations follow number counts, not convenience:

* stars: cumulative counts ``N(<m) = density_at_20 * 10^(slope (m - 20))`` per deg^2, with the density
  drawn per field between high and low Galactic latitude (Bahcall & Soneira 1980 give slopes ~0.3);
* galaxies: differential counts with slope 0.45 brighter than m = 21 and 0.33 fainter (Yasuda et al.
  2001, AJ 122, 1104; Metcalfe et al. 2001, MNRAS 323, 795); a median redshift rising with magnitude,
  absolute magnitudes from the Planck 2018 cosmology, a size-luminosity relation (Shen et al. 2003,
  MNRAS 343, 978), Sersic (1963) indices for discs and spheroids.

The observed catalogue (``observe_catalog``) is what a PS1- or GLADE+-like survey reports: incomplete
towards faint magnitudes, with magnitude, size and redshift errors, spectroscopic redshifts only
for bright galaxies, and a star-galaxy score that becomes ambiguous for faint sources (as the PS1
score of Tachibana & Miller 2018, PASP 130, 128001).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SkyConfig:
    """Number counts and catalogue properties (magnitudes in the survey's band).

    Args:
        star_density_range: stars per deg^2 brighter than m = 20, drawn log-uniformly per field.
        star_count_slope: d log10 N / dm of the stellar counts.
        galaxy_density_at_20: galaxies per deg^2 per mag at m = 20.
        bright_limit: brightest source simulated (mag).
        faint_margin: sources are simulated down to the survey depth plus this (mag), so that
            undetected sources still add to the background and confusion.
        catalog_depth_margin: the catalogue's 50% completeness is the survey depth plus this (mag).
        catalog_completeness_width: width of the completeness roll-off (mag).
        spec_z_limit: galaxies brighter than this have spectroscopic redshifts (SDSS main sample).
        photo_z_sigma: photometric redshift scatter, sigma_z / (1 + z).
        no_redshift_fraction: fraction of fainter galaxies without any redshift.
    """

    star_density_range: tuple[float, float] = (2.0e3, 3.0e4)
    star_count_slope: float = 0.3
    galaxy_density_at_20: float = 1600.0
    bright_limit: float = 9.0
    faint_margin: float = 1.5
    catalog_depth_margin: float = 1.5
    catalog_completeness_width: float = 0.25
    spec_z_limit: float = 17.7
    photo_z_sigma: float = 0.03
    no_redshift_fraction: float = 0.1


@lru_cache(maxsize=1)
def _cosmology_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Redshift grid, distance modulus (mag) and proper kpc per arcsec, Planck 2018."""
    from astropy.cosmology import Planck18

    z = np.geomspace(1e-3, 4.0, 600)
    dm = Planck18.distmod(z).value
    kpc_per_arcsec = Planck18.kpc_proper_per_arcmin(z).value / 60.0
    return z, dm, kpc_per_arcsec


def distance_modulus(z: np.ndarray | float) -> np.ndarray:
    zg, dm, _ = _cosmology_table()
    return np.interp(z, zg, dm)


def kpc_per_arcsec(z: np.ndarray | float) -> np.ndarray:
    zg, _, kpa = _cosmology_table()
    return np.interp(z, zg, kpa)


def sample_counts(
    rng: np.random.Generator, cumulative: np.ndarray, grid: np.ndarray, area_deg2: float
) -> np.ndarray:
    """Draw magnitudes from cumulative counts ``cumulative`` (per deg^2, on ``grid`` mag) over an area."""
    expected = (cumulative[-1] - cumulative[0]) * area_deg2
    n = rng.poisson(expected)
    u = rng.uniform(cumulative[0], cumulative[-1], n)
    return np.interp(u, cumulative, grid)


def star_cumulative(grid: np.ndarray, density_at_20: float, slope: float) -> np.ndarray:
    """Cumulative star counts N(<m) per deg^2 on a magnitude grid."""
    return density_at_20 * 10 ** (slope * (grid - 20.0))


def galaxy_cumulative(grid: np.ndarray, density_at_20: float) -> np.ndarray:
    """Cumulative galaxy counts N(<m) per deg^2: slope 0.45 to m = 21, 0.33 fainter."""
    differential = density_at_20 * np.where(
        grid < 21.0, 10 ** (0.45 * (grid - 20.0)), 10**0.45 * 10 ** (0.33 * (grid - 21.0))
    )
    steps = np.diff(grid, prepend=grid[0])
    return np.cumsum(differential * steps)


def sersic_b(n: np.ndarray) -> np.ndarray:
    """b_n of the Sersic profile such that R_e encloses half the light (Ciotti & Bertin 1999)."""
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)


def draw_stars(
    rng: np.random.Generator, cfg: SkyConfig, shape: tuple[int, int], area_deg2: float, faint: float
) -> pd.DataFrame:
    """Stars uniformly over the frame; returns x, y (px), mag, and the field's density at m = 20."""
    lo, hi = np.log10(cfg.star_density_range)
    density = 10 ** rng.uniform(lo, hi)
    grid = np.linspace(cfg.bright_limit, faint, 2000)
    mag = sample_counts(rng, star_cumulative(grid, density, cfg.star_count_slope), grid, area_deg2)
    ny, nx = shape
    stars = pd.DataFrame(
        {"x": rng.uniform(-0.5, nx - 0.5, mag.size), "y": rng.uniform(-0.5, ny - 0.5, mag.size), "mag": mag}
    )
    stars.attrs["density_at_20"] = density
    return stars


def draw_galaxies(
    rng: np.random.Generator,
    cfg: SkyConfig,
    shape: tuple[int, int],
    area_deg2: float,
    faint: float,
    pixel_scale: float,
) -> pd.DataFrame:
    """Galaxies with magnitude, redshift, Sersic index, half-light radius, axis ratio and angle.

    Columns: x, y (px), mag, z, abs_mag, sersic_n, r_eff (arcsec), r_eff_px, axis_ratio, pa (deg,
    east of north, i.e. counter-clockwise from +y for north-up images).
    """
    grid = np.linspace(cfg.bright_limit + 3.0, faint, 2000)
    mag = sample_counts(rng, galaxy_cumulative(grid, cfg.galaxy_density_at_20), grid, area_deg2)
    n = mag.size
    z_median = 0.1 * 10 ** (0.16 * (mag - 17.5))
    z = np.clip(z_median * 10 ** rng.normal(0.0, 0.15, n), 0.003, 3.5)
    abs_mag = mag - distance_modulus(z)
    r_kpc = 10 ** (0.4 - 0.1 * (abs_mag + 21.0) + rng.normal(0.0, 0.2, n))
    r_eff = np.maximum(r_kpc / kpc_per_arcsec(z), 0.1)
    spheroid = rng.uniform(size=n) < np.clip(0.25 + 0.05 * (20.0 - mag), 0.2, 0.5)
    sersic_n = np.where(spheroid, rng.uniform(2.5, 4.5, n), rng.uniform(0.7, 1.5, n))
    axis_ratio = np.where(spheroid, rng.uniform(0.5, 1.0, n), rng.uniform(0.2, 1.0, n))
    ny, nx = shape
    return pd.DataFrame(
        {
            "x": rng.uniform(-0.5, nx - 0.5, n),
            "y": rng.uniform(-0.5, ny - 0.5, n),
            "mag": mag,
            "z": z,
            "abs_mag": abs_mag,
            "sersic_n": sersic_n,
            "r_eff": r_eff,
            "r_eff_px": r_eff / pixel_scale,
            "axis_ratio": axis_ratio,
            "pa": rng.uniform(0.0, 180.0, n),
        }
    )


def sample_sersic_offsets(
    rng: np.random.Generator, galaxies: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions drawn from each galaxy's own light profile.

    The enclosed light of a Sersic profile is ``P(2n, b_n (r / R_e)^(1/n))`` (regularised incomplete
    gamma), so ``r = R_e (P^-1(2n, u) / b_n)^n`` for uniform ``u``; the point is then placed on the
    galaxy's ellipse. Returns (dx, dy) in pixels and the elliptical radius in units of R_e.
    """
    from scipy.special import gammaincinv

    n = galaxies["sersic_n"].to_numpy()
    u = rng.uniform(0.0, 0.97, n.size)  # the outermost 3% of the light is lost in the sky
    r = (gammaincinv(2 * n, u) / sersic_b(n)) ** n
    phi = rng.uniform(0.0, 2 * np.pi, n.size)
    q = galaxies["axis_ratio"].to_numpy()
    a = r * galaxies["r_eff_px"].to_numpy() / np.sqrt(q)  # R_e is the circularised radius
    u_major, v_minor = a * np.cos(phi), a * q * np.sin(phi)
    pa = np.deg2rad(galaxies["pa"].to_numpy())
    dx = -u_major * np.sin(pa) + v_minor * np.cos(pa)
    dy = u_major * np.cos(pa) + v_minor * np.sin(pa)
    return dx, dy, r


def observe_catalog(
    rng: np.random.Generator, stars: pd.DataFrame, galaxies: pd.DataFrame, cfg: SkyConfig, depth: float
) -> pd.DataFrame:
    """The reference catalogue of the field as a survey would publish it.

    Columns: source_id, kind_true (hidden truth: star / galaxy), x, y, mag, mag_err, sgscore, r_eff
    (arcsec, NaN for stars), axis_ratio, pa, z, z_err, z_kind ("spec", "phot" or "none").
    ``source_id`` indexes stars as ``s<i>`` and galaxies as ``g<i>`` (their row in the truth tables).
    """
    m50 = depth + cfg.catalog_depth_margin
    frames = []
    for kind, table in (("star", stars), ("galaxy", galaxies)):
        mag = table["mag"].to_numpy()
        p_detect = 1.0 / (1.0 + np.exp((mag - m50) / cfg.catalog_completeness_width))
        keep = rng.uniform(size=mag.size) < p_detect
        t = table[keep]
        m = t["mag"].to_numpy()
        snr = 5.0 * 10 ** (-0.4 * (m - m50))
        mag_err = np.hypot(1.0857 / snr, 0.01)
        # star-galaxy separation is sure for bright sources and a coin toss at the catalogue limit
        certainty = 1.0 / (1.0 + np.exp((m - (m50 - 1.5)) / 0.5))
        sign = 1.0 if kind == "star" else -1.0
        sgscore = np.clip(
            0.5 + sign * 0.5 * certainty + rng.normal(0.0, 0.12, m.size) * (1 - certainty), 0, 1
        )
        out = pd.DataFrame(
            {
                "source_id": [f"{kind[0]}{i}" for i in t.index],
                "kind_true": kind,
                "x": t["x"].to_numpy(),
                "y": t["y"].to_numpy(),
                "mag": m + rng.normal(0.0, mag_err),
                "mag_err": mag_err,
                "sgscore": sgscore,
            }
        )
        if kind == "galaxy":
            out["r_eff"] = t["r_eff"].to_numpy() * 10 ** rng.normal(0.0, 0.06, m.size)
            out["axis_ratio"] = np.clip(t["axis_ratio"].to_numpy() + rng.normal(0.0, 0.05, m.size), 0.1, 1)
            out["pa"] = (t["pa"].to_numpy() + rng.normal(0.0, 5.0, m.size)) % 180.0
            z = t["z"].to_numpy()
            spec = m < cfg.spec_z_limit
            none = ~spec & (rng.uniform(size=m.size) < cfg.no_redshift_fraction)
            z_err = np.where(spec, 1e-4, cfg.photo_z_sigma * (1 + z))
            out["z"] = np.where(none, np.nan, np.clip(z + rng.normal(0.0, 1.0, m.size) * z_err, 1e-3, None))
            out["z_err"] = np.where(none, np.nan, z_err)
            out["z_kind"] = np.where(spec, "spec", np.where(none, "none", "phot"))
        frames.append(out)
    catalog = pd.concat(frames, ignore_index=True)
    for col in ("r_eff", "axis_ratio", "pa", "z", "z_err"):
        catalog[col] = catalog[col].astype(float)
    catalog["z_kind"] = catalog["z_kind"].fillna("none")
    return catalog
