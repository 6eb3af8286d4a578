"""What each detection really is, from the simulator's truth.

A detection is real when it lies within ``match_radius`` of a transient whose difference flux has the
detection's sign (a fading variable star is a real negative detection; the negative lobe of a
brightening source is not). Each transient is matched to its nearest detection only. Otherwise the
detection is bogus, and its kind is the first that explains it: missing data or the frame edge, a
cosmic ray, hot pixel, bad column or saturated pixel in the artifact map, a bright star, a galaxy, or
else noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from hybrid.sim.artifacts import Artifact
from hybrid.sim.field import SimulatedEpoch, SimulatedField

_ARTIFACT_KIND = {
    Artifact.COSMIC_RAY: "cosmic_ray",
    Artifact.HOT_PIXEL: "hot_pixel",
    Artifact.BAD_COLUMN: "bad_column",
    Artifact.SATURATION: "saturation",
}


def match_truth(
    candidates: pd.DataFrame, field: SimulatedField, epoch: SimulatedEpoch, *, fwhm_px: float
) -> pd.DataFrame:
    """Truth columns for candidates with x, y, sign and stamp_nan_fraction.

    Returns truth_real (bool), truth_type (a transient type or "bogus"), transient_id (-1 for bogus),
    truth_mag (mag of the transient's difference flux, NaN for bogus), truth_host_offset (arcsec) and
    truth_host_offset_re (in units of the host's R_e; NaN without a host) and bogus_kind ("" for reals).
    """
    n = len(candidates)
    x, y = candidates["x"].to_numpy(), candidates["y"].to_numpy()
    sign = candidates["sign"].to_numpy()
    truth = epoch.transients
    real = np.zeros(n, bool)
    ttype = np.full(n, "bogus", dtype=object)
    tid = np.full(n, -1, np.int64)
    tmag = np.full(n, np.nan)
    offset, offset_re = np.full(n, np.nan), np.full(n, np.nan)
    if n and len(truth):
        radius = np.maximum(1.0 * fwhm_px, 2.0) + truth["trail_px"].fillna(0.0).to_numpy() / 2
        tree = cKDTree(np.c_[x, y])
        best: dict[int, tuple[float, int]] = {}
        for t, (tx, ty, tflux, r) in enumerate(
            zip(truth["x"], truth["y"], truth["flux"], radius, strict=True)
        ):
            for i in tree.query_ball_point((tx, ty), r):
                if np.sign(tflux) != sign[i]:
                    continue
                d = float(np.hypot(x[i] - tx, y[i] - ty))
                if t not in best or d < best[t][0]:
                    best[t] = (d, i)
        taken: dict[int, float] = {}
        for t, (d, i) in best.items():  # a detection keeps its nearest transient
            if i in taken and taken[i] <= d:
                continue
            taken[i] = d
            real[i] = True
            ttype[i] = truth["type"].iat[t]
            tid[i] = truth["transient_id"].iat[t]
            tmag[i] = truth["mag"].iat[t]
            offset[i] = truth["host_offset"].iat[t]
            offset_re[i] = truth["host_offset_re"].iat[t]
    kind = np.where(real, "", bogus_kinds(candidates, field, epoch, fwhm_px=fwhm_px))
    return pd.DataFrame(
        {
            "truth_real": real,
            "truth_type": ttype,
            "transient_id": tid,
            "truth_mag": tmag,
            "truth_host_offset": offset,
            "truth_host_offset_re": offset_re,
            "bogus_kind": kind,
        }
    )


def bogus_kinds(
    candidates: pd.DataFrame, field: SimulatedField, epoch: SimulatedEpoch, *, fwhm_px: float
) -> np.ndarray:
    """The most likely origin of each detection if it is bogus (see the module docstring)."""
    n = len(candidates)
    kind = np.full(n, "noise", dtype=object)
    if n == 0:
        return kind
    x, y = candidates["x"].to_numpy(), candidates["y"].to_numpy()
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    amap = epoch.artifact_map
    ny, nx = amap.shape
    depth = field.survey.depth_m5
    decided = np.zeros(n, bool)

    edge = candidates["stamp_nan_fraction"].to_numpy() > 0.0
    near_edge = (ix < 8) | (iy < 8) | (ix >= nx - 8) | (iy >= ny - 8)
    no_data = field.reference.valid()
    win = 3
    for i in range(n):  # artifact codes within a small box around the detection
        y0, y1, x0, x1 = max(iy[i] - win, 0), iy[i] + win + 1, max(ix[i] - win, 0), ix[i] + win + 1
        if edge[i] or near_edge[i] or not no_data[y0:y1, x0:x1].all():
            kind[i], decided[i] = "edge", True
            continue
        codes = amap[y0:y1, x0:x1]
        for code in (Artifact.COSMIC_RAY, Artifact.SATURATION, Artifact.HOT_PIXEL, Artifact.BAD_COLUMN):
            if (codes == code).any():
                kind[i], decided[i] = _ARTIFACT_KIND[code], True
                break

    stars = field.stars
    bright = stars[stars["mag"] < depth - 0.5]
    if len(bright) and (~decided).any():
        # residual reach grows with brightness: the wings stay above the noise further out
        reach = fwhm_px * (2.0 + 0.8 * np.maximum(depth - bright["mag"].to_numpy() - 0.5, 0))
        d, j = cKDTree(bright[["x", "y"]].to_numpy()).query(np.c_[x, y], k=min(8, len(bright)))
        d, j = np.atleast_2d(d.T).T, np.atleast_2d(j.T).T
        hit = (d < reach[np.minimum(j, len(bright) - 1)]).any(axis=1) & ~decided
        kind[hit], decided[hit] = "star_residual", True

    gals = field.galaxies
    gals = gals[gals["mag"] < depth + 0.5]
    if len(gals) and (~decided).any():
        d, j = cKDTree(gals[["x", "y"]].to_numpy()).query(np.c_[x, y], k=min(8, len(gals)))
        d, j = np.atleast_2d(d.T).T, np.atleast_2d(j.T).T
        reach = np.maximum(2.0 * gals["r_eff_px"].to_numpy()[np.minimum(j, len(gals) - 1)], 1.5 * fwhm_px)
        hit = (d < reach).any(axis=1) & ~decided
        kind[hit] = "galaxy_residual"
    return kind
