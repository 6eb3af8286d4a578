"""Host association and context features for transient candidates.

:class:`ContextAssociator` (registered as ``catalog`` in :data:`ASSOCIATORS`, configured by
``conf/context/*.yaml``) matches candidates against a :class:`~hybrid.context.KnowledgeBase` and
returns the features of :data:`CONTEXT_FEATURE_UNITS` plus a context class and a sentence. Modes:

``nearest``
    the nearest galaxy within ``nearest_radius`` (a baseline);
``dlr``
    the galaxy with the smallest fractional offset d_DLR, if below ``max_dlr`` (Sullivan et al. 2006;
    Gupta et al. 2016, AJ 152, 154; GHOST, Gagliano et al. 2021, ApJ 908, 170);
``probabilistic``
    posterior probabilities of every galaxy within ``search_radius`` and of "the host is not in the
    catalogue", from priors on offset, host luminosity and redshift (Prost; see
    :mod:`hybrid.context.priors`). The transient's redshift is used when known. Without it (as at
    alert time), ``without_redshift: dlr`` ranks the galaxies by d_DLR instead: the magnitude of an
    alert is not the peak magnitude the redshift prior assumes (a detection 2 mag below peak doubles
    the "no host" answers on the ZTF BTS), and DLR ranking needs no redshift (GHOST); the
    probabilities stay as features, with a missing-host term calibrated on redshift-less transients
    (``reports/context_bts.md``).

Stars may also come from the candidate itself: alerts carry their nearest sources in the survey's
reference catalogue (ZTF: the three nearest Pan-STARRS1 sources within 30", with distances and the
star-galaxy score of Tachibana & Miller 2018), named by ``nearby_sources``. A source with sgscore >=
``star_sgscore`` is a star; the nearest star is the nearer of those and the knowledge base's, and a
knowledge-base star wins when the two lie within ``dedup_radius`` of each other (the same star, and
the catalogue says what kind of star). The simulated build computes the same features from the
survey's own catalogue split at the same score (``conf/context/default.yaml``).

Galaxies without a catalogued size are treated as compact ones of semi-major axis ``size_floor``
(which also floors all sizes, since offsets below the seeing say nothing); without an axis ratio as
round; without a position angle as aligned north-south. Features that cannot be defined are NaN, never
guessed: host quantities without a chosen host, distances without a host redshift, absolute
magnitudes without the candidate's magnitude, probabilities outside the probabilistic mode.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord
from scipy.integrate import trapezoid
from scipy.special import logsumexp

from hybrid.context.catalog import CatalogSpec
from hybrid.context.cosmology import (
    comoving_volume_element,
    distance_modulus,
    kpc_per_arcsec,
    luminosity_distance,
)
from hybrid.context.geometry import directional_light_radius, separation_and_direction
from hybrid.context.knowledge import KnowledgeBase
from hybrid.context.priors import LN10, HostPriors
from hybrid.context.rules import Rule, classify
from hybrid.context.sentence import context_sentences
from hybrid.registry import Registry

#: Context feature -> unit, as recorded in a dataset's meta.json.
CONTEXT_FEATURE_UNITS: dict[str, str] = {
    "ctx_offset_arcsec": "arcsec",  # separation from the chosen host
    "ctx_offset_dlr": "",  # separation / directional light radius
    "ctx_host_mag": "mag",  # in the host catalogue's band
    "ctx_host_z": "",
    "ctx_host_z_spec": "bool",  # 1 spectroscopic, 0 photometric, NaN without host redshift
    "ctx_distmod": "mag",  # Planck 2018, from the host redshift
    "ctx_lumdist": "Mpc",
    "ctx_abs_mag": "mag",  # candidate magnitude - distance modulus (no K-correction)
    "ctx_offset_kpc": "kpc",  # projected (proper) offset at the host redshift
    "ctx_host_prob": "",  # posterior probability of the chosen (or else the best) catalogued galaxy
    "ctx_no_host_prob": "",  # posterior probability that the host is not in the catalogue
    "ctx_no_host": "bool",  # no catalogued host chosen
    "ctx_n_galaxies": "count",  # catalogued galaxies within the search radius
    "ctx_nearest_star_dist": "arcsec",
    "ctx_nearest_star_sgscore": "",
    "ctx_nearest_star_mag": "mag",
    "ctx_nearest_agn_dist": "arcsec",
}
#: Text columns written beside the features (not model inputs).
CONTEXT_TEXT_COLUMNS: tuple[str, ...] = (
    "ctx_class",
    "ctx_host_name",
    "ctx_host_band",
    "ctx_nearest_star_class",
    "ctx_nearest_star_catalog",  # catalogue of the nearest star ("VSX", "PS1", ...)
    "ctx_nearest_agn_name",
    "ctx_sentence",
)
MODES: tuple[str, ...] = ("nearest", "dlr", "probabilistic")


@runtime_checkable
class Associator(Protocol):
    """Contract: per-candidate context features (with the units of :meth:`feature_units`) of a
    candidate table with ``ra``/``dec`` in degrees."""

    def feature_units(self) -> dict[str, str]: ...

    def features(self, candidates: pd.DataFrame, kb: KnowledgeBase | None = None) -> pd.DataFrame: ...


ASSOCIATORS: Registry[Any] = Registry("associator", "hybrid.context", contract=Associator)


@dataclass
class _Prepared:
    """Per-galaxy arrays and missing-host tables of one knowledge base under one set of priors."""

    ra: np.ndarray
    dec: np.ndarray
    a: np.ndarray
    q: np.ndarray
    pa: np.ndarray  # rad
    mag: np.ndarray
    z: np.ndarray
    z_sigma: np.ndarray
    z_spec: np.ndarray
    log_w: np.ndarray
    distmod: np.ndarray
    kpc: np.ndarray
    name: np.ndarray
    band: np.ndarray
    z_grid: np.ndarray
    log_rho_z: np.ndarray  # log rho_miss(z) per arcsec^2 per unit z
    mag_grid: np.ndarray
    log_rho_m: np.ndarray  # log of the integral of rho_miss(z) p(m | z) dz
    log_nz_m: np.ndarray  # log of (1 / z_max) x integral of p(m | z) dz: hosts without redshift
    log_rho_total: float


def _as_array(value: Any, n: int, unit: u.Unit | None = None) -> np.ndarray:
    if value is None:
        return np.full(n, np.nan)
    if isinstance(value, u.Quantity):
        value = value.to_value(unit or u.one)
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size == 1 and n != 1:
        arr = np.full(n, float(arr[0]))
    if arr.size != n:
        raise ValueError(f"expected {n} values, got {arr.size}")
    return arr


def _radec(coords: SkyCoord | tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(coords, SkyCoord):
        c = coords.icrs
        return np.atleast_1d(c.ra.deg).astype(float), np.atleast_1d(c.dec.deg).astype(float)
    ra, dec = coords
    return (
        np.atleast_1d(_as_array(ra, np.size(ra), u.deg)),
        np.atleast_1d(_as_array(dec, np.size(dec), u.deg)),
    )


def _nearest(index: Any, ra: np.ndarray, dec: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Separation (arcsec, NaN if none) and row (-1 if none) of the nearest indexed source."""
    d, j = index.query(ra, dec, radius_arcsec=radius, k=1)
    return np.where(j[:, 0] >= 0, d[:, 0], np.nan), j[:, 0]


def _take(values: np.ndarray, rows: np.ndarray, fill: Any) -> np.ndarray:
    """``values[rows]`` with ``fill`` where ``rows`` is -1."""
    if len(values) == 0:
        return np.full(len(rows), fill, dtype=object if isinstance(fill, str) else float)
    return np.where(rows >= 0, values[np.maximum(rows, 0)], fill)


def _from_options(cls: type, options: dict[str, Any]) -> Any:
    return cls(**options)


@dataclass(frozen=True)
class NearbyStars:
    """The nearest star of each transient: distance (arcsec, NaN: none), sgscore, magnitude, class and
    catalogue name ("" when unknown)."""

    dist: np.ndarray
    sgscore: np.ndarray
    mag: np.ndarray
    cls: np.ndarray
    catalog: np.ndarray

    def merge(self, other: NearbyStars, dedup_radius: float) -> NearbyStars:
        """Per transient, the nearer star of the two; this one (the higher priority) when both lie
        within ``dedup_radius`` of each other, as in the knowledge base's de-duplication."""
        mine = np.isfinite(self.dist)
        with np.errstate(invalid="ignore"):
            keep = mine & ~(other.dist < self.dist - dedup_radius)
        take = ~keep & np.isfinite(other.dist)
        return NearbyStars(
            *(
                np.where(take, b, np.where(keep, a, fill))
                for a, b, fill in (
                    (self.dist, other.dist, np.nan),
                    (self.sgscore, other.sgscore, np.nan),
                    (self.mag, other.mag, np.nan),
                    (self.cls, other.cls, ""),
                    (self.catalog, other.catalog, ""),
                )
            )
        )


def _nearby_spec(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked ``nearby_sources`` option: lists of columns per quantity and a catalogue name."""
    if not cfg:
        return {}
    cfg = dict(cfg)
    unknown = sorted(set(cfg) - {"dist", "sgscore", "mag", "catalog"})
    if unknown or "dist" not in cfg or "sgscore" not in cfg:
        raise ValueError(
            f"context nearby_sources {cfg!r}: needs 'dist' and 'sgscore' (lists of candidate columns), "
            "optional 'mag' and 'catalog'"
        )
    out: dict[str, Any] = {k: [str(c) for c in cfg.get(k) or []] for k in ("dist", "sgscore", "mag")}
    if len(out["sgscore"]) != len(out["dist"]) or (out["mag"] and len(out["mag"]) != len(out["dist"])):
        raise ValueError(f"context nearby_sources {cfg!r}: dist, sgscore and mag must list as many columns")
    out["catalog"] = str(cfg.get("catalog") or "survey")
    return out


@ASSOCIATORS.register("catalog")
class ContextAssociator:
    """Associates candidates with catalogued hosts and returns their context features.

    Args:
        mode: "nearest", "dlr" or "probabilistic" (see the module docstring).
        search_radius: radius (arcsec) within which galaxies are considered.
        max_candidates: at most this many nearest galaxies per candidate are considered.
        max_dlr: ``dlr`` mode: largest d_DLR of an accepted host.
        nearest_radius: ``nearest`` mode: largest separation (arcsec); default ``search_radius``.
        star_radius: radius (arcsec) of the nearest-star search.
        agn_radius: radius (arcsec) of the nearest-AGN search.
        dedup_radius: cross-match radius (arcsec) for de-duplicating catalogues of one kind.
        size_floor: smallest semi-major axis (arcsec) used for the DLR.
        catalogs: catalogue specs (:class:`~hybrid.context.CatalogSpec` fields) read from files, in
            priority order within each kind.
        survey_catalog: specs applied to a survey's own reference catalogue passed in memory
            (:meth:`knowledge_base`), e.g. galaxies and stars split by star-galaxy score.
        priors: :class:`~hybrid.context.priors.HostPriors` options.
        rules: context-class rules (:mod:`hybrid.context.rules`), first match wins.
        mag_column, z_column, z_err_column: candidate-table columns read by :meth:`features`.
        nearby_sources: candidate-table columns of the candidate's own nearest catalogue sources,
            ``{dist: [...], sgscore: [...], mag: [...], catalog: "PS1"}`` (arcsec, score, mag; one
            column per source), used by :meth:`features` when present (see the module docstring).
        star_sgscore: sources of ``nearby_sources`` with sgscore >= this are stars.
        without_redshift: ``probabilistic`` mode, transients without a redshift: ``probabilistic``
            (the posterior chooses, with the magnitude in the redshift prior) or ``dlr`` (the galaxy of
            smallest d_DLR below ``max_dlr`` is the host, as GHOST does without redshifts; the
            probabilities are still computed, without the magnitude, with the missing-host term
            scaled by ``priors.missing_scale_without_redshift``). See the module docstring.
        text: also write the class, host name and sentence columns.
    """

    def __init__(
        self,
        *,
        mode: str = "probabilistic",
        search_radius: float = 60.0,
        max_candidates: int = 16,
        max_dlr: float = 5.0,
        nearest_radius: float | None = None,
        star_radius: float = 30.0,
        agn_radius: float = 10.0,
        dedup_radius: float = 1.0,
        size_floor: float = 1.0,
        catalogs: Sequence[Mapping[str, Any] | CatalogSpec] = (),
        survey_catalog: Sequence[Mapping[str, Any] | CatalogSpec] = (),
        priors: Mapping[str, Any] | HostPriors | None = None,
        rules: Sequence[Mapping[str, Any] | Rule] = (),
        mag_column: str | None = "mag_psf",
        z_column: str | None = None,
        z_err_column: str | None = None,
        nearby_sources: Mapping[str, Any] | None = None,
        star_sgscore: float = 0.5,
        without_redshift: str = "probabilistic",
        text: bool = True,
    ) -> None:
        self._options = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if mode not in MODES:
            raise ValueError(f"context mode must be one of {', '.join(MODES)}, got {mode!r}")
        if without_redshift not in ("probabilistic", "dlr"):
            raise ValueError(
                f"context without_redshift must be probabilistic or dlr, got {without_redshift!r}"
            )
        if search_radius <= 0 or max_candidates < 1:
            raise ValueError("context search_radius must be > 0 and max_candidates >= 1")
        self.mode = mode
        self.search_radius = float(search_radius)
        self.max_candidates = int(max_candidates)
        self.max_dlr = float(max_dlr)
        self.nearest_radius = float(nearest_radius) if nearest_radius is not None else self.search_radius
        self.star_radius = float(star_radius)
        self.agn_radius = float(agn_radius)
        self.dedup_radius = float(dedup_radius)
        self.size_floor = float(size_floor)
        self.catalogs = [CatalogSpec.from_config(c) for c in catalogs]
        self.survey_catalog = [CatalogSpec.from_config(c) for c in survey_catalog]
        self.priors = HostPriors.from_config(priors)
        self.rules = [Rule.from_config(r) for r in rules]
        self.mag_column = mag_column
        self.z_column = z_column
        self.z_err_column = z_err_column
        self.nearby_sources = _nearby_spec(nearby_sources)
        self.star_sgscore = float(star_sgscore)
        self.without_redshift = without_redshift
        self.text = bool(text)
        self._kb: KnowledgeBase | None = None
        self._prepared: weakref.WeakKeyDictionary[KnowledgeBase, _Prepared] = weakref.WeakKeyDictionary()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as its options (for worker processes), without the loaded catalogues."""
        return (_from_options, (type(self), self._options))

    def replace(self, **changes: Any) -> ContextAssociator:
        """A copy with some options changed, sharing the loaded catalogue files (e.g. another mode)."""
        new = type(self)(**{**self._options, **changes})
        if "catalogs" not in changes:
            new._kb = self._kb
        return new

    def feature_units(self) -> dict[str, str]:
        """The features this configuration defines, with units: :data:`CONTEXT_FEATURE_UNITS` less those
        that are NaN by construction (nearest-star features without star catalogues, the AGN distance
        without AGN catalogues, the probabilities outside the probabilistic mode). All columns are
        still written; this is the list a dataset's ``meta.json`` gives the model."""
        kinds = {s.kind for s in (*self.catalogs, *self.survey_catalog)}
        drop = set()
        if "star" not in kinds and not self.nearby_sources:
            drop |= {c for c in CONTEXT_FEATURE_UNITS if c.startswith("ctx_nearest_star_")}
        if "agn" not in kinds:
            drop.add("ctx_nearest_agn_dist")
        if self.mode != "probabilistic":
            drop |= {"ctx_host_prob", "ctx_no_host_prob"}
        return {k: v for k, v in CONTEXT_FEATURE_UNITS.items() if k not in drop}

    # -- knowledge base ------------------------------------------------------------------------------
    def knowledge_base(self, survey_frame: pd.DataFrame | None = None) -> KnowledgeBase:
        """The knowledge base: the configured catalogue files (loaded once), or a survey's catalogue.

        Args:
            survey_frame: a survey's own reference catalogue (e.g. the simulator's ``field.catalog``),
                read with the ``survey_catalog`` specs. Without it, the ``catalogs`` files are used.
        """
        if survey_frame is not None:
            if not self.survey_catalog:
                raise ValueError("context: no survey_catalog specs configured to read a survey catalogue")
            frames = {s.name: survey_frame for s in self.survey_catalog}
            return KnowledgeBase.from_catalogs(
                self.survey_catalog, frames=frames, dedup_radius=self.dedup_radius
            )
        if self._kb is None:
            if not self.catalogs and not self.nearby_sources:
                raise ValueError("context: no catalogs configured (and no survey catalogue given)")
            self._kb = KnowledgeBase.from_catalogs(self.catalogs, dedup_radius=self.dedup_radius)
        return self._kb

    def _prepare(self, kb: KnowledgeBase) -> _Prepared:
        if kb in self._prepared:
            return self._prepared[kb]
        pr = self.priors
        g = kb.galaxies
        a = np.fmax(g["a"].to_numpy(float), self.size_floor)
        q = np.nan_to_num(g["q"].to_numpy(float), nan=1.0)
        pa = np.radians(np.nan_to_num(g["pa"].to_numpy(float), nan=0.0))
        z = g["z"].to_numpy(float)
        z_spec = g["z_spec"].to_numpy(bool)
        default_sigma = np.where(z_spec, pr.redshift.spec_sigma, pr.redshift.phot_sigma) * (1 + z)
        z_err = g["z_err"].to_numpy(float)
        z_sigma = np.where(np.isfinite(z_err) & (z_err > 0), z_err, default_sigma)
        dm = distance_modulus(z)
        mag = g["mag"].to_numpy(float)
        band = g["band"].to_numpy(object)
        log_w = np.zeros(len(g))
        if pr.luminosity_weighting:
            for b in np.unique(band):
                sel = band == b
                m_star = pr.luminosity_function(str(b)).m_star
                log_w[sel] = -0.4 * LN10 * (mag[sel] - dm[sel] - m_star)
            log_w = np.nan_to_num(log_w, nan=0.0)

        z_grid = np.geomspace(1e-4, pr.redshift.z_max, 400)
        dvdz = np.nan_to_num(comoving_volume_element(z_grid))
        dm_grid = distance_modulus(z_grid)
        rho = None
        for band_c, m_lim in kb.completeness.values():
            lf = pr.luminosity_function(band_c)
            frac = lf.fraction_fainter(m_lim - dm_grid) if np.isfinite(m_lim) else np.ones_like(z_grid)
            r = lf.luminosity_density * frac
            rho = r if rho is None else np.minimum(rho, r)
        if rho is None:  # no galaxy catalogue: every host is missing
            rho = np.full_like(z_grid, next(iter(pr.luminosity_functions.values())).luminosity_density)
        rho_z = np.maximum(rho * dvdz, 1e-300)
        mag_grid = np.arange(-5.0, 35.0, 0.05)
        like = np.exp(pr.transient.log_likelihood(mag_grid[:, None], dm_grid[None, :]))
        prep = _Prepared(
            ra=g["ra"].to_numpy(float),
            dec=g["dec"].to_numpy(float),
            a=a,
            q=q,
            pa=pa,
            mag=mag,
            z=z,
            z_sigma=z_sigma,
            z_spec=z_spec,
            log_w=log_w,
            distmod=dm,
            kpc=kpc_per_arcsec(z),
            name=g["name"].to_numpy(object),
            band=band,
            z_grid=z_grid,
            log_rho_z=np.log(rho_z),
            mag_grid=mag_grid,
            log_rho_m=np.log(np.maximum(trapezoid(rho_z[None, :] * like, z_grid, axis=1), 1e-300)),
            log_nz_m=np.log(np.maximum(trapezoid(like, z_grid, axis=1) / pr.redshift.z_max, 1e-300)),
            log_rho_total=float(np.log(trapezoid(rho_z, z_grid))),
        )
        self._prepared[kb] = prep
        return prep

    # -- association ---------------------------------------------------------------------------------
    def associate(
        self,
        coords: SkyCoord | tuple[Any, Any],
        *,
        mag: u.Quantity | np.ndarray | None = None,
        z: np.ndarray | None = None,
        z_err: np.ndarray | None = None,
        kb: KnowledgeBase | None = None,
        text: bool | None = None,
        nearby_stars: NearbyStars | None = None,
    ) -> pd.DataFrame:
        """Context features of transients at ``coords``.

        Parameters
        ----------
        coords : SkyCoord or (ra, dec)
            Positions; plain numbers are degrees (ICRS).
        mag : Quantity (mag) or array, optional
            Apparent magnitudes of the transients (for ctx_abs_mag, and for the redshift prior when
            ``z`` is unknown); NaN where unknown.
        z, z_err : array, optional
            Transient redshifts (e.g. spectroscopic) and their uncertainties; NaN where unknown.
        kb : KnowledgeBase, optional
            Defaults to the configured catalogue files.
        text : bool, optional
            Also return the class, host name and sentence (default: the associator's ``text``).
        nearby_stars : NearbyStars, optional
            The nearest star of each transient in its own survey catalogue (see the module docstring).

        Returns
        -------
        DataFrame
            One row per position: the features of :data:`CONTEXT_FEATURE_UNITS` (units there), and
            with ``text`` the columns of :data:`CONTEXT_TEXT_COLUMNS`.
        """
        ra, dec = _radec(coords)
        n = ra.size
        kb = kb if kb is not None else self.knowledge_base()
        prep = self._prepare(kb)
        mag = _as_array(mag, n, u.mag)
        z_t = _as_array(z, n)
        z_t = np.where(z_t > 0, z_t, np.nan)
        z_t_err = _as_array(z_err, n)

        k = self.max_candidates
        _, idx = kb.galaxy_index.query(ra, dec, radius_arcsec=self.search_radius, k=k)
        ti, ki = np.nonzero(idx >= 0)
        gi = idx[ti, ki]
        sep, direction = separation_and_direction(prep.ra[gi], prep.dec[gi], ra[ti], dec[ti])
        d_dlr = sep / directional_light_radius(prep.a[gi], prep.q[gi], prep.pa[gi], direction)

        def grid(values: np.ndarray, fill: float) -> np.ndarray:
            out = np.full((n, k), fill)
            out[ti, ki] = values
            return out

        host_prob = np.full(n, np.nan)
        no_host_prob = np.full(n, np.nan)
        by_dlr = grid(np.where(d_dlr < self.max_dlr, -d_dlr, -np.inf), -np.inf)
        # probabilistic mode, transients without a redshift and without_redshift = dlr: DLR ranking
        fallback = np.zeros(n, bool)
        if self.mode == "nearest":
            score = grid(np.where(sep < self.nearest_radius, -sep, -np.inf), -np.inf)
        elif self.mode == "dlr":
            score = by_dlr
        else:
            if self.without_redshift == "dlr":
                fallback = ~np.isfinite(z_t)
            # the fallback's probabilities ignore the magnitude: at alert time it is not the peak
            # magnitude the transient luminosity prior describes
            prior_mag = np.where(fallback, np.nan, mag)
            log_h, log_miss = self._log_terms(prep, gi, ti, sep, d_dlr, prior_mag, z_t, z_t_err)
            log_miss = log_miss + np.where(fallback, np.log(self.priors.missing_scale_without_redshift), 0.0)
            score = grid(log_h, -np.inf)
            norm = logsumexp(np.column_stack([log_miss, score]), axis=1)
            no_host_prob = np.exp(log_miss - norm)
        rows = np.arange(n)
        best = np.where(fallback, np.argmax(by_dlr, axis=1), np.argmax(score, axis=1))
        best_score = score[rows, best]
        if self.mode == "probabilistic":
            with np.errstate(invalid="ignore"):
                host_prob = np.where(np.isfinite(best_score), np.exp(best_score - norm), np.nan)
            has = np.where(
                fallback,
                np.isfinite(by_dlr[rows, best]),
                np.isfinite(best_score) & (host_prob > no_host_prob),
            )
        else:
            has = np.isfinite(best_score)
        host = np.where(has, idx[rows, best], -1)
        sep_grid, dlr_grid = grid(sep, np.nan), grid(d_dlr, np.nan)
        h = np.where(has, host, 0)

        def pick(values: np.ndarray) -> np.ndarray:
            if len(values) == 0:
                return np.full(n, np.nan)
            return np.where(has, values[h], np.nan)

        host_z = pick(prep.z)
        distmod = pick(prep.distmod)
        offset = np.where(has, sep_grid[rows, best], np.nan)
        z_spec = np.where(np.isfinite(host_z), pick(prep.z_spec.astype(float)), np.nan)
        out = pd.DataFrame(
            {
                "ctx_offset_arcsec": offset,
                "ctx_offset_dlr": np.where(has, dlr_grid[rows, best], np.nan),
                "ctx_host_mag": pick(prep.mag),
                "ctx_host_z": host_z,
                "ctx_host_z_spec": z_spec,
                "ctx_distmod": distmod,
                "ctx_lumdist": luminosity_distance(host_z),
                "ctx_abs_mag": mag - distmod,
                "ctx_offset_kpc": offset * pick(prep.kpc),
                "ctx_host_prob": host_prob,
                "ctx_no_host_prob": no_host_prob,
                "ctx_no_host": ~has,
                "ctx_n_galaxies": (idx >= 0).sum(axis=1),
            }
        )
        star_dist, star = _nearest(kb.star_index, ra, dec, self.star_radius)
        stars = NearbyStars(
            star_dist,
            _take(kb.stars["sgscore"].to_numpy(float), star, np.nan),
            _take(kb.stars["mag"].to_numpy(float), star, np.nan),
            _take(kb.stars["cls"].to_numpy(object), star, ""),
            _take(kb.stars["catalog"].to_numpy(object), star, ""),
        )
        if nearby_stars is not None:
            stars = stars.merge(nearby_stars, self.dedup_radius)
        out["ctx_nearest_star_dist"] = stars.dist
        out["ctx_nearest_star_sgscore"] = stars.sgscore
        out["ctx_nearest_star_mag"] = stars.mag
        agn_dist, agn = _nearest(kb.agn_index, ra, dec, self.agn_radius)
        out["ctx_nearest_agn_dist"] = agn_dist
        out = out[list(CONTEXT_FEATURE_UNITS)]
        if text if text is not None else self.text:
            out["ctx_host_name"] = np.where(has, prep.name[h] if len(prep.name) else "", "")
            out["ctx_host_band"] = np.where(has, prep.band[h] if len(prep.band) else "", "")
            out["ctx_nearest_star_class"] = stars.cls
            out["ctx_nearest_star_catalog"] = stars.catalog
            out["ctx_nearest_agn_name"] = _take(kb.agn["name"].to_numpy(object), agn, "")
            out["ctx_class"] = classify(out, self.rules) if self.rules else ""
            out["ctx_sentence"] = context_sentences(out.assign(ctx_search_radius=self.search_radius))
            out = out[[*CONTEXT_FEATURE_UNITS, *CONTEXT_TEXT_COLUMNS]]
        return out

    def _log_terms(
        self,
        prep: _Prepared,
        gi: np.ndarray,
        ti: np.ndarray,
        sep: np.ndarray,
        d_dlr: np.ndarray,
        mag: np.ndarray,
        z_t: np.ndarray,
        z_t_err: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """log of the host terms (per galaxy-transient pair) and of the missing-host term (per transient)."""
        pr = self.priors
        log_off = pr.offset.log_density(d_dlr, prep.a[gi], prep.q[gi], sep, prep.kpc[gi])
        zt, m = z_t[ti], mag[ti]
        zg = prep.z[gi]
        t_sigma = np.where(np.isfinite(z_t_err[ti]), z_t_err[ti], pr.redshift.transient_sigma * (1 + zt))
        var = prep.z_sigma[gi] ** 2 + t_sigma**2
        with np.errstate(invalid="ignore"):
            log_gauss = -0.5 * (zt - zg) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
            log_mag = pr.transient.log_likelihood(m, prep.distmod[gi])
        log_nz = np.interp(m, prep.mag_grid, prep.log_nz_m)
        known_t, known_g, known_m = np.isfinite(zt), np.isfinite(zg), np.isfinite(m)
        log_z = np.select(
            [known_t & known_g, known_t, known_m & known_g, known_m],
            [log_gauss, -np.log(pr.redshift.z_max), log_mag, log_nz],
            default=0.0,
        )
        log_h = prep.log_w[gi] + log_off + log_z
        log_miss = np.where(
            np.isfinite(z_t),
            np.interp(z_t, prep.z_grid, prep.log_rho_z),
            np.where(np.isfinite(mag), np.interp(mag, prep.mag_grid, prep.log_rho_m), prep.log_rho_total),
        )
        return log_h, log_miss

    def nearby_stars(self, candidates: pd.DataFrame) -> NearbyStars | None:
        """The nearest star among the candidates' own ``nearby_sources`` columns (None when the table
        has none of them): the nearest source with sgscore >= ``star_sgscore`` within ``star_radius``."""
        spec = self.nearby_sources
        if not spec or not any(c in candidates.columns for c in spec["dist"]):
            return None
        n = len(candidates)

        def block(key: str) -> np.ndarray:
            cols = [
                candidates[c].to_numpy(float) if c in candidates.columns else np.full(n, np.nan)
                for c in spec.get(key, [])
            ]
            return np.column_stack(cols) if cols else np.full((n, len(spec["dist"])), np.nan)

        dist, score, mag = block("dist"), block("sgscore"), block("mag")
        with np.errstate(invalid="ignore"):
            star = (dist >= 0) & (dist <= self.star_radius) & (score >= self.star_sgscore)
        d = np.where(star, dist, np.inf)
        j = np.argmin(d, axis=1)
        rows = np.arange(n)
        found = np.isfinite(d[rows, j])
        return NearbyStars(
            np.where(found, dist[rows, j], np.nan),
            np.where(found, score[rows, j], np.nan),
            np.where(found, mag[rows, j], np.nan),
            np.full(n, "", dtype=object),
            np.where(found, spec["catalog"], "").astype(object),
        )

    def features(self, candidates: pd.DataFrame, kb: KnowledgeBase | None = None) -> pd.DataFrame:
        """Context features of a candidate table (columns ra, dec in degrees; ``mag_column`` when
        present; ``z_column``/``z_err_column`` when configured and present), indexed like it."""
        for col in ("ra", "dec"):
            if col not in candidates.columns:
                raise KeyError(f"context features need candidate column {col!r}")

        def column(name: str | None) -> np.ndarray | None:
            return candidates[name].to_numpy(float) if name and name in candidates.columns else None

        out = self.associate(
            (candidates["ra"].to_numpy(float), candidates["dec"].to_numpy(float)),
            mag=column(self.mag_column),
            z=column(self.z_column),
            z_err=column(self.z_err_column),
            kb=kb,
            nearby_stars=self.nearby_stars(candidates),
        )
        out.index = candidates.index
        return out
