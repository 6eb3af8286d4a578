"""Host-redshift recovery: how often an associator picks a host at the transient's redshift.

Definitions (used by ``hybrid bench context`` and its tests):

* a transient *has a match* when it has a redshift z and at least one catalogued galaxy within
  ``match_radius`` (120") whose redshift is within ``tol (1 + z)`` of it (tol = 0.005; strictly less);
* a host choice is *correct* when the chosen galaxy's redshift is within that tolerance, and
  *wrong* when a host is chosen, the transient has a redshift, and the host's redshift is not
  within it (including hosts without a redshift);
* *recovered* counts the transients with a match whose chosen host is correct;
* *no host, with a match* counts the transients with a match for which no host is chosen.

Transients without a redshift count towards neither; a transient for which no host is chosen is
neither recovered nor wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from hybrid.context.knowledge import KnowledgeBase
from hybrid.stats import mad_sigma


@dataclass(frozen=True)
class Recovery:
    transients: int  # rows
    with_redshift: int
    with_match: int
    hosts_chosen: int  # among transients with a redshift
    recovered: int
    wrong: int
    no_host_with_match: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def redshift_matches(
    kb: KnowledgeBase,
    ra: np.ndarray,
    dec: np.ndarray,
    z: np.ndarray,
    *,
    radius: float = 120.0,
    tol: float = 0.005,
    k: int = 256,
) -> np.ndarray:
    """Whether each transient has a catalogued galaxy within ``radius`` (arcsec) at its redshift."""
    _, idx = kb.galaxy_index.query(ra, dec, radius_arcsec=radius, k=k)
    zg = kb.galaxies["z"].to_numpy(float)
    zg_pairs = np.where(idx >= 0, zg[np.maximum(idx, 0)] if len(zg) else np.nan, np.nan)
    with np.errstate(invalid="ignore"):
        return (np.abs(zg_pairs - z[:, None]) < tol * (1 + z[:, None])).any(axis=1)


def host_redshift_recovery(
    host_z: np.ndarray, no_host: np.ndarray, z: np.ndarray, has_match: np.ndarray, *, tol: float = 0.005
) -> Recovery:
    """Counts of the module docstring from each transient's chosen host redshift and flags."""
    known = np.isfinite(z)
    chosen = ~np.asarray(no_host, bool) & known
    with np.errstate(invalid="ignore"):
        correct = chosen & (np.abs(host_z - z) < tol * (1 + z))
    return Recovery(
        transients=len(z),
        with_redshift=int(known.sum()),
        with_match=int((has_match & known).sum()),
        hosts_chosen=int(chosen.sum()),
        recovered=int((correct & has_match).sum()),
        wrong=int((chosen & ~correct).sum()),
        no_host_with_match=int((has_match & known & np.asarray(no_host, bool)).sum()),
    )


def recovery_table(results: dict[str, Recovery]) -> pd.DataFrame:
    return pd.DataFrame({k: v.as_dict() for k, v in results.items()}).T


#: The methods compared on the BTS: name -> options of ContextAssociator.replace (and whether the
#: transient's redshift is given). The two baselines are those of the issue that set the goal.
BTS_METHODS: dict[str, tuple[dict, bool]] = {
    'nearest galaxy within 60" (baseline)': ({"mode": "nearest", "nearest_radius": 60.0}, False),
    'smallest d_DLR < 5 within 120" (baseline)': ({"mode": "dlr", "max_dlr": 5.0}, False),
    "probabilistic with the transient redshift": ({"mode": "probabilistic"}, True),
    "probabilistic without it (peak magnitude only)": (
        {"mode": "probabilistic", "without_redshift": "probabilistic"},
        False,
    ),
    "probabilistic without it, DLR ranking (alert time)": (
        {"mode": "probabilistic", "without_redshift": "dlr"},
        False,
    ),
}


def calibrate_missing_scale(
    no_host_prob: np.ndarray, has_match: np.ndarray, *, grid: np.ndarray | None = None
) -> tuple[float, float]:
    """The factor on the missing-host density that maximises the likelihood of the outcomes.

    Multiplying the missing-host density by s multiplies the odds P(no host) / P(host catalogued)
    by s, so one association run (at s = 1) gives the Bernoulli log-likelihood of "a catalogued
    galaxy at the transient's redshift" (``has_match``) for every s of ``grid`` (default 1e-4 .. 1e2,
    121 steps); a one-parameter recalibration, as Platt scaling's intercept.

    Returns:
        (best s, its mean log-likelihood per transient).
    """
    grid = np.geomspace(1e-4, 1e2, 121) if grid is None else np.asarray(grid, float)
    p = np.clip(np.asarray(no_host_prob, float), 1e-300, 1.0)
    y = np.asarray(has_match, bool)
    with np.errstate(divide="ignore"):
        log_odds = np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-16))
    best = (float("nan"), -np.inf)
    for s in grid:
        lo = log_odds + np.log(s)
        # log P(no host) = -log(1 + e^-lo), log P(host) = -log(1 + e^lo)
        ll = np.where(y, -np.logaddexp(0.0, lo), -np.logaddexp(0.0, -lo)).mean()
        if ll > best[1]:
            best = (float(s), float(ll))
    return best


def mean_log_likelihood(no_host_prob: np.ndarray, has_match: np.ndarray) -> float:
    """Mean Bernoulli log-likelihood of ``has_match`` under P(host catalogued) = 1 - no_host_prob."""
    p = np.clip(np.asarray(no_host_prob, float), 1e-12, 1 - 1e-12)
    return float(np.where(np.asarray(has_match, bool), np.log1p(-p), np.log(p)).mean())


@dataclass
class BTSResult:
    """Outcome of :func:`bts_benchmark`: counts per method, plus per-transient arrays for plots."""

    recovery: dict[str, Recovery]
    has_match: np.ndarray
    match_offset: np.ndarray  # arcsec, of the matching galaxy with the smallest d_DLR (NaN: none)
    match_dlr: np.ndarray
    correct: dict[str, np.ndarray]  # per method: chosen host at the transient's redshift
    features: dict[str, pd.DataFrame]

    def table(self) -> pd.DataFrame:
        return recovery_table(self.recovery)


def _match_geometry(
    associator: Any, kb: KnowledgeBase, bts: pd.DataFrame, radius: float, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Offset and d_DLR of the matching galaxy (same redshift) with the smallest d_DLR."""
    from hybrid.context.geometry import directional_light_radius, separation_and_direction

    prep = associator._prepare(kb)
    ra, dec, z = (bts[c].to_numpy(float) for c in ("ra", "dec", "z"))
    _, idx = kb.galaxy_index.query(ra, dec, radius_arcsec=radius, k=256)
    ti, ki = np.nonzero(idx >= 0)
    gi = idx[ti, ki]
    sep, direction = separation_and_direction(prep.ra[gi], prep.dec[gi], ra[ti], dec[ti])
    d = sep / directional_light_radius(prep.a[gi], prep.q[gi], prep.pa[gi], direction)
    with np.errstate(invalid="ignore"):
        ok = np.abs(prep.z[gi] - z[ti]) < tol * (1 + z[ti])
    offset, dlr = np.full(len(bts), np.nan), np.full(len(bts), np.inf)
    for t, s, dd in zip(ti[ok], sep[ok], d[ok], strict=True):
        if dd < dlr[t]:
            offset[t], dlr[t] = s, dd
    return offset, np.where(np.isfinite(dlr), dlr, np.nan)


def bts_benchmark(
    associator: Any,
    bts: pd.DataFrame,
    *,
    kb: KnowledgeBase | None = None,
    methods: dict[str, tuple[dict, bool]] | None = None,
    match_radius: float = 120.0,
    tol: float = 0.005,
) -> BTSResult:
    """Host-redshift recovery of several association methods on a BTS-like table, in one run.

    Args:
        associator: a configured :class:`~hybrid.context.ContextAssociator` (its catalogues and
            priors); each method is ``associator.replace(**options)``.
        bts: columns ra, dec (deg), z, peak_mag (see :func:`hybrid.context.recipes.load_bts`).
        kb: the knowledge base (default: the associator's catalogue files).
        methods: name -> (options, use the transient redshift); default :data:`BTS_METHODS`.
        match_radius, tol: see the module docstring.
    """
    kb = kb if kb is not None else associator.knowledge_base()
    ra, dec, z = (bts[c].to_numpy(float) for c in ("ra", "dec", "z"))
    mag = bts["peak_mag"].to_numpy(float) if "peak_mag" in bts.columns else None
    has_match = redshift_matches(kb, ra, dec, z, radius=match_radius, tol=tol)
    recovery, correct, feats = {}, {}, {}
    for name, (options, use_z) in (methods or BTS_METHODS).items():
        a = associator.replace(**{"search_radius": match_radius, **options})
        f = a.associate((ra, dec), mag=mag, z=z if use_z else None, kb=kb, text=False)
        recovery[name] = host_redshift_recovery(
            f["ctx_host_z"].to_numpy(), f["ctx_no_host"].to_numpy(), z, has_match, tol=tol
        )
        with np.errstate(invalid="ignore"):
            correct[name] = ~f["ctx_no_host"].to_numpy() & (
                np.abs(f["ctx_host_z"].to_numpy() - z) < tol * (1 + z)
            )
        feats[name] = f
    offset, dlr = _match_geometry(associator, kb, bts, match_radius, tol)
    return BTSResult(recovery, has_match, offset, dlr, correct, feats)


def redshift_scatter(host_z: np.ndarray, z: np.ndarray, keep: np.ndarray) -> float:
    """Robust sigma (1.4826 MAD) of (host_z - z) / (1 + z) over the rows ``keep``."""
    r = ((host_z - z) / (1 + z))[keep & np.isfinite(host_z) & np.isfinite(z)]
    if r.size == 0:
        return float("nan")
    return mad_sigma(r)
