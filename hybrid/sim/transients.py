"""Transients of a simulated field: who they are, where, and how bright at each epoch.

* ``sn`` -- supernova-like, offset drawn from the host's own Sersic light profile, hosts chosen with
  probability proportional to their luminosity (the SN rate follows stellar mass), peak absolute
  magnitude ~N(-18.5, 1.0) at the host redshift, a simple rise-and-decline light curve;
* ``nuclear`` -- at a galaxy core (AGN flares, TDEs), brightening or fading against the reference;
* ``variable_star`` -- a catalogued star whose flux differs from the reference;
* ``asteroid`` -- a point source with no counterpart, new at every epoch, trailed when fast (NEOs);
* ``hostless`` -- a point source far from any galaxy;
* ``agn`` -- an active nucleus: a point source at a galaxy core that is in the reference too and
  flickers by tenths of a magnitude (stochastic variability, MacLeod et al. 2010, ApJ 721, 1014), so
  half of its detections are negative;
* ``cv`` -- a dwarf nova: a faint blue star (quiescent below the survey depth) in outburst by 2-6 mag
  in some epochs (Warner 1995, Cataclysmic Variable Stars).

Magnitudes reach below the detection limit, so completeness against magnitude can be measured.
All fluxes are in ADU at the survey's nominal zero point; each exposure scales them by its own
transparency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybrid.sim.sky import distance_modulus, sample_sersic_offsets
from hybrid.sim.survey import SurveyProfile


@dataclass(frozen=True)
class TransientConfig:
    """Mean numbers per field (persistent transients) or per epoch (asteroids), and their physics.

    Magnitude ranges of asteroids and hostless transients are relative to the survey depth (mag).
    Asteroid rates are in arcsec / minute.
    """

    sn_per_field: float = 40.0
    nuclear_per_field: float = 10.0
    variable_stars_per_field: float = 15.0
    hostless_per_field: float = 6.0
    asteroids_per_epoch: float = 12.0
    sn_peak_abs_mag: tuple[float, float] = (-18.5, 1.0)
    sn_phase_range: tuple[float, float] = (-15.0, 60.0)  # days from peak at the first epoch
    sn_rise: float = 0.015  # mag / day^2 before peak
    sn_decline: float = 0.03  # mag / day after peak
    nuclear_abs_mag: tuple[float, float] = (-18.0, 1.2)
    nuclear_fading_fraction: float = 0.25
    variable_amplitude: tuple[float, float] = (0.05, 1.5)  # mag, log-uniform
    asteroid_mag_range: tuple[float, float] = (-5.0, 1.0)
    asteroid_count_slope: float = 0.3
    asteroid_rate: float = 0.25  # arcsec / min, main belt
    neo_fraction: float = 0.05
    neo_rate: float = 10.0  # arcsec / min, median
    known_asteroid_margin: float = -0.5  # asteroids brighter than depth + this are in the MPC
    known_asteroid_fraction: float = 0.95
    hostless_mag_range: tuple[float, float] = (-3.0, 0.7)
    hostless_min_separation: float = 4.0  # R_e of any galaxy
    agn_per_field: float = 0.0
    agn_abs_mag: tuple[float, float] = (-21.0, 1.5)  # nucleus, mean and sigma
    agn_variability: tuple[float, float] = (0.05, 0.6)  # mag rms between epochs, log-uniform
    cv_per_field: float = 0.0
    cv_quiescent_range: tuple[float, float] = (0.0, 3.0)  # mag below the survey depth
    cv_outburst_amplitude: tuple[float, float] = (2.0, 6.0)  # mag
    cv_outburst_probability: float = 0.5  # per epoch


def _light_curve(cfg: TransientConfig, phase: np.ndarray) -> np.ndarray:
    """Magnitude offset from peak at ``phase`` days (quadratic rise, linear decline)."""
    return np.where(phase < 0, cfg.sn_rise * phase**2, cfg.sn_decline * phase)


def draw_persistent(
    rng: np.random.Generator,
    cfg: TransientConfig,
    survey: SurveyProfile,
    stars: pd.DataFrame,
    galaxies: pd.DataFrame,
    epoch_days: np.ndarray,
    shape: tuple[int, int],
) -> tuple[pd.DataFrame, np.ndarray]:
    """Transients that live through the field's epochs.

    Returns the table (one row per transient: id, type, x, y, host, star, host_offset (arcsec),
    host_offset_re, ref_flux) and fluxes (n_transients, n_epochs) in the science images (ADU at the
    nominal zero point). For variable stars ``ref_flux`` is the star's reference flux and the
    science flux replaces it; for the others ``ref_flux`` is extra flux present in the reference.
    """
    rows: list[pd.DataFrame] = []
    fluxes: list[np.ndarray] = []
    to_adu = survey.mag_to_adu
    n_epochs = epoch_days.size
    weights = to_adu(galaxies["mag"].to_numpy()) if len(galaxies) else np.zeros(0)

    def pick_hosts(n: int) -> np.ndarray:
        if n == 0 or weights.sum() == 0:
            return np.zeros(0, int)
        return rng.choice(len(galaxies), size=n, p=weights / weights.sum())

    # supernova-like: offsets from the host's light profile
    hosts = pick_hosts(rng.poisson(cfg.sn_per_field))
    if hosts.size:
        g = galaxies.iloc[hosts]
        dx, dy, r_re = sample_sersic_offsets(rng, g)
        peak = rng.normal(*cfg.sn_peak_abs_mag, hosts.size) + distance_modulus(g["z"].to_numpy())
        phase0 = rng.uniform(*cfg.sn_phase_range, hosts.size)
        mags = peak[:, None] + _light_curve(cfg, phase0[:, None] + epoch_days[None, :])
        rows.append(
            pd.DataFrame(
                {
                    "type": "sn",
                    "x": g["x"].to_numpy() + dx,
                    "y": g["y"].to_numpy() + dy,
                    "host": hosts,
                    "star": -1,
                    "host_offset": np.hypot(dx, dy) * survey.pixel_scale,
                    "host_offset_re": r_re,
                    "ref_flux": 0.0,
                }
            )
        )
        fluxes.append(to_adu(mags))

    # nuclear: at the core, against a reference state
    hosts = pick_hosts(rng.poisson(cfg.nuclear_per_field))
    if hosts.size:
        g = galaxies.iloc[hosts]
        dm = distance_modulus(g["z"].to_numpy())
        flare = to_adu(rng.normal(*cfg.nuclear_abs_mag, hosts.size) + dm)
        quiescent = flare * 10 ** rng.uniform(-1.5, -0.3, hosts.size)
        fading = rng.uniform(size=hosts.size) < cfg.nuclear_fading_fraction
        ref_flux = np.where(fading, flare, quiescent)
        wobble = 10 ** rng.normal(0.0, 0.1, (hosts.size, n_epochs))
        sci = np.where(fading, quiescent, flare)[:, None] * wobble
        jitter = rng.normal(0.0, 0.05 / survey.pixel_scale, (2, hosts.size))  # 0.05" astrometric
        rows.append(
            pd.DataFrame(
                {
                    "type": "nuclear",
                    "x": g["x"].to_numpy() + jitter[0],
                    "y": g["y"].to_numpy() + jitter[1],
                    "host": hosts,
                    "star": -1,
                    "host_offset": np.hypot(*jitter) * survey.pixel_scale,
                    "host_offset_re": np.hypot(*jitter) / g["r_eff_px"].to_numpy(),
                    "ref_flux": ref_flux,
                }
            )
        )
        fluxes.append(sci)

    # variable stars: unsaturated catalogued stars whose flux changes
    eligible = np.flatnonzero(
        (stars["mag"] > survey.saturation_mag() + 0.5) & (stars["mag"] < survey.depth_m5 + 0.5)
    )
    n = min(rng.poisson(cfg.variable_stars_per_field), eligible.size)
    if n:
        idx = rng.choice(eligible, n, replace=False)
        s = stars.iloc[idx]
        amp = 10 ** rng.uniform(*np.log10(cfg.variable_amplitude), n)
        phase = rng.uniform(0, 2 * np.pi, (n, n_epochs))
        dmag = amp[:, None] * np.sin(phase)
        ref = to_adu(s["mag"].to_numpy())
        rows.append(
            pd.DataFrame(
                {
                    "type": "variable_star",
                    "x": s["x"].to_numpy(),
                    "y": s["y"].to_numpy(),
                    "host": -1,
                    "star": idx,
                    "host_offset": np.nan,
                    "host_offset_re": np.nan,
                    "ref_flux": ref,
                }
            )
        )
        fluxes.append(ref[:, None] * 10 ** (-0.4 * dmag))

    # hostless: far from every galaxy
    n = rng.poisson(cfg.hostless_per_field)
    if n:
        ny, nx = shape
        cand_x, cand_y = rng.uniform(0, nx - 1, 20 * n), rng.uniform(0, ny - 1, 20 * n)
        if len(galaxies):
            from scipy.spatial import cKDTree

            d, j = cKDTree(galaxies[["x", "y"]].to_numpy()).query(np.c_[cand_x, cand_y])
            far = d > cfg.hostless_min_separation * np.maximum(galaxies["r_eff_px"].to_numpy()[j], 1.0)
            cand_x, cand_y = cand_x[far], cand_y[far]
        n = min(n, cand_x.size)
        peak = survey.depth_m5 + rng.uniform(*cfg.hostless_mag_range, n)
        phase0 = rng.uniform(*cfg.sn_phase_range, n)
        rows.append(
            pd.DataFrame(
                {
                    "type": "hostless",
                    "x": cand_x[:n],
                    "y": cand_y[:n],
                    "host": -1,
                    "star": -1,
                    "host_offset": np.nan,
                    "host_offset_re": np.nan,
                    "ref_flux": 0.0,
                }
            )
        )
        fluxes.append(to_adu(peak[:, None] + _light_curve(cfg, phase0[:, None] + epoch_days[None, :])))

    # AGN: a point-like nucleus present in the reference, flickering in each science epoch
    hosts = pick_hosts(rng.poisson(cfg.agn_per_field))
    if hosts.size:
        g = galaxies.iloc[hosts]
        nucleus = to_adu(rng.normal(*cfg.agn_abs_mag, hosts.size) + distance_modulus(g["z"].to_numpy()))
        rms = 10 ** rng.uniform(*np.log10(cfg.agn_variability), hosts.size)
        sci = nucleus[:, None] * 10 ** (-0.4 * rms[:, None] * rng.standard_normal((hosts.size, n_epochs)))
        rows.append(
            pd.DataFrame(
                {
                    "type": "agn",
                    "x": g["x"].to_numpy(),
                    "y": g["y"].to_numpy(),
                    "host": hosts,
                    "star": -1,
                    "host_offset": 0.0,
                    "host_offset_re": 0.0,
                    "ref_flux": nucleus,
                }
            )
        )
        fluxes.append(sci)

    # dwarf novae: a faint quiescent star in the reference, in outburst in some epochs
    n = rng.poisson(cfg.cv_per_field)
    if n:
        ny, nx = shape
        quiescent = to_adu(survey.depth_m5 + rng.uniform(*cfg.cv_quiescent_range, n))
        outburst = 10 ** (0.4 * rng.uniform(*cfg.cv_outburst_amplitude, (n, n_epochs)))
        active = rng.uniform(size=(n, n_epochs)) < cfg.cv_outburst_probability
        rows.append(
            pd.DataFrame(
                {
                    "type": "cv",
                    "x": rng.uniform(0, nx - 1, n),
                    "y": rng.uniform(0, ny - 1, n),
                    "host": -1,
                    "star": -1,
                    "host_offset": np.nan,
                    "host_offset_re": np.nan,
                    "ref_flux": quiescent,
                }
            )
        )
        fluxes.append(quiescent[:, None] * np.where(active, outburst, 1.0))

    if not rows:
        empty = pd.DataFrame(
            columns=["type", "x", "y", "host", "star", "host_offset", "host_offset_re", "ref_flux"]
        )
        return empty, np.zeros((0, n_epochs))
    table = pd.concat(rows, ignore_index=True)
    table.insert(0, "transient_id", np.arange(len(table)))
    return table, np.concatenate(fluxes, axis=0)


def draw_asteroids(
    rng: np.random.Generator,
    cfg: TransientConfig,
    survey: SurveyProfile,
    shape: tuple[int, int],
    exposure_time: float | None = None,
) -> pd.DataFrame:
    """Asteroids of one epoch: x, y (px, mid-exposure), flux, trail length (px) and angle, known flag.

    ``exposure_time`` (s; default the profile's) sets the trail length."""
    n = rng.poisson(cfg.asteroids_per_epoch)
    lo, hi = survey.depth_m5 + np.array(cfg.asteroid_mag_range)
    u = rng.uniform(size=n)
    s = cfg.asteroid_count_slope
    mag = np.log10(10 ** (s * lo) + u * (10 ** (s * hi) - 10 ** (s * lo))) / s
    neo = rng.uniform(size=n) < cfg.neo_fraction
    rate = np.where(
        neo, cfg.neo_rate * 10 ** rng.normal(0, 0.3, n), cfg.asteroid_rate * 10 ** rng.normal(0, 0.2, n)
    )
    trail = rate * (exposure_time or survey.exposure_time) / 60.0 / survey.pixel_scale
    known = (mag < survey.depth_m5 + cfg.known_asteroid_margin) & (
        rng.uniform(size=n) < cfg.known_asteroid_fraction
    )
    ny, nx = shape
    return pd.DataFrame(
        {
            "x": rng.uniform(0, nx - 1, n),
            "y": rng.uniform(0, ny - 1, n),
            "mag": mag,
            "flux": survey.mag_to_adu(mag),
            "trail_px": trail,
            "trail_angle": rng.uniform(0, np.pi, n),
            "known": known,
        }
    )


def trail_points(
    asteroids: pd.DataFrame, step: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split each (possibly trailed) asteroid into point sources along its trail.

    Returns x, y, flux of the points and the asteroid index of each point.
    """
    xs, ys, fs, owner = [], [], [], []
    for i, a in enumerate(asteroids.itertuples()):
        k = max(1, int(np.ceil(a.trail_px / step)))
        t = (np.arange(k) + 0.5) / k - 0.5
        xs.append(a.x + t * a.trail_px * np.cos(a.trail_angle))
        ys.append(a.y + t * a.trail_px * np.sin(a.trail_angle))
        fs.append(np.full(k, a.flux / k))
        owner.append(np.full(k, i))
    if not xs:
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, int)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(fs), np.concatenate(owner)
