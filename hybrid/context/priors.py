"""Priors and likelihoods of probabilistic host association (after Prost: Gagliano et al.).

For a transient at position x, with an optional redshift z_t and magnitude m_t, each catalogued galaxy
j within the search radius and the hypothesis "the host is not in the catalogue" (j = 0) get

    P(j | x, z_t, m_t)  proportional to  w_j * p(x | j) * p(z_t, m_t | j),
    P(0 | x, z_t, m_t)  proportional to  rho_miss(z_t, m_t),

which is the posterior of a Poisson process of transients whose rate follows luminosity:

* ``w_j = L_j / L*`` -- the prior on the host's absolute magnitude given its redshift (transient
  rates grow with stellar mass, hence luminosity; Prost's absolute-magnitude term). Galaxies with
  no magnitude or redshift count as L* galaxies.
* ``p(x | j)`` -- the surface density (per arcsec^2) of transients about galaxy j: a gamma law in
  the fractional offset d_DLR (:class:`OffsetPrior`), spread over the galaxy's ellipse, plus an
  optional "environment" term, a Gaussian of fixed physical size (kpc) around the galaxy, for
  transients in faint uncatalogued satellites and group members (Sherlock associates by physical
  separation for this reason).
* ``p(z_t | j)`` -- Gaussian in z_t - z_j with the catalogue's and the transient's redshift
  uncertainties (:class:`RedshiftModel`); when z_t is unknown, ``p(m_t | z_j)`` from a transient
  luminosity function (:class:`TransientLuminosity`) ties the magnitude to the host's distance.
* ``rho_miss`` -- the luminosity in galaxies fainter than the catalogue's completeness limit per
  arcsec^2 and unit redshift: ``phi* Gamma(alpha + 2) P(alpha + 2, L_lim(z) / L*) dV/dz/dOmega``
  for a Schechter (1976) luminosity function (:class:`LuminosityFunction`), with the limit ``L_lim``
  set by the catalogue's limiting magnitude at the distance z. With z_t unknown it is integrated over
  z (weighted by ``p(m_t | z)`` when m_t is known).

Every term has the same units (L* per arcsec^2, per unit redshift or magnitude), so the posterior is
normalised over the galaxies and the missing host without arbitrary constants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy.special import gamma as gamma_fn
from scipy.special import gammainc, gammaln

LN10 = np.log(10.0)


@dataclass(frozen=True)
class OffsetPrior:
    """Where transients fall about their host.

    Args:
        shape, scale: gamma law of d_DLR (scale in units of the catalogue's DLR). The surface density
            is ``gamma(d_DLR) / (2 pi d_DLR a^2 q)`` per arcsec^2; shape 2 is an exponential disc with
            scale length ``scale * a``.
        environment_fraction: share of transients in the environment term (0 disables it).
        environment_kpc: Gaussian sigma of the environment term (proper kpc at the galaxy's redshift).
    """

    shape: float = 1.5
    scale: float = 0.5
    environment_fraction: float = 0.0
    environment_kpc: float = 100.0

    def log_density(
        self, d_dlr: np.ndarray, a: np.ndarray, q: np.ndarray, sep: np.ndarray, kpc_per_arcsec: np.ndarray
    ) -> np.ndarray:
        """log of the transient surface density about each galaxy (1 / arcsec^2)."""
        s = np.maximum(d_dlr, 1e-4)
        k, theta = self.shape, self.scale
        log_gamma = (k - 1) * np.log(s) - s / theta - gammaln(k) - k * np.log(theta)
        log_disc = log_gamma - np.log(2 * np.pi * s * a * a * q)
        eps = self.environment_fraction
        if eps <= 0:
            return log_disc
        with np.errstate(invalid="ignore", divide="ignore"):
            sigma = self.environment_kpc / kpc_per_arcsec
            log_env = -0.5 * (sep / sigma) ** 2 - np.log(2 * np.pi * sigma**2)
        log_env = np.where(np.isfinite(log_env), log_env, -np.inf)
        return np.logaddexp(np.log1p(-eps) + log_disc, np.log(eps) + log_env)


@dataclass(frozen=True)
class LuminosityFunction:
    """A Schechter (1976) luminosity function: M* (mag), faint-end slope alpha, phi* (Mpc^-3)."""

    m_star: float
    alpha: float
    phi_star: float

    @property
    def luminosity_density(self) -> float:
        """Luminosity density in units of L* per Mpc^3: phi* Gamma(alpha + 2)."""
        return self.phi_star * float(gamma_fn(self.alpha + 2))

    def fraction_fainter(self, abs_mag_limit: np.ndarray) -> np.ndarray:
        """Share of the luminosity density in galaxies fainter than ``abs_mag_limit``."""
        x = 10 ** (-0.4 * (np.asarray(abs_mag_limit, float) - self.m_star))
        return gammainc(self.alpha + 2, x)


#: Schechter fits, converted to Planck 2018's h = 0.6766. B: 2dFGRS b_J (Norberg et al. 2002, MNRAS
#: 336, 907: M* - 5 log h = -19.66, alpha = -1.21, phi* = 1.61e-2 h^3). r: SDSS (Blanton et al. 2003,
#: ApJ 592, 819: M* - 5 log h = -20.44, alpha = -1.05, phi* = 1.49e-2 h^3).
DEFAULT_LUMINOSITY_FUNCTIONS: dict[str, LuminosityFunction] = {
    "B": LuminosityFunction(m_star=-20.51, alpha=-1.21, phi_star=4.99e-3),
    "r": LuminosityFunction(m_star=-21.29, alpha=-1.05, phi_star=4.61e-3),
}


@dataclass(frozen=True)
class RedshiftModel:
    """Redshift uncertainties (as sigma / (1 + z)) used when a catalogue gives none, and the z range.

    Args:
        spec_sigma: catalogue spectroscopic redshifts (peculiar velocities of a few hundred km/s).
        phot_sigma: catalogue photometric redshifts.
        transient_sigma: the transient's own redshift.
        z_max: upper end of the redshift range over which unknown redshifts are marginalised.
    """

    spec_sigma: float = 0.0015
    phot_sigma: float = 0.03
    transient_sigma: float = 0.001
    z_max: float = 1.0


@dataclass(frozen=True)
class TransientLuminosity:
    """Absolute magnitude of the transients (Gaussian), used when their redshift is unknown."""

    abs_mag_mean: float = -18.5
    abs_mag_sigma: float = 1.5

    def log_likelihood(self, mag: np.ndarray, distmod: np.ndarray) -> np.ndarray:
        """log p(m | z) (1 / mag) of apparent magnitude ``mag`` at distance modulus ``distmod``."""
        sig = self.abs_mag_sigma
        return -0.5 * ((mag - distmod - self.abs_mag_mean) / sig) ** 2 - np.log(sig * np.sqrt(2 * np.pi))


def _build(cls: type, cfg: Any) -> Any:
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; known: {sorted(names)}")
    return cls(**dict(cfg))


@dataclass(frozen=True)
class HostPriors:
    """Everything the probabilistic mode assumes; see the module docstring.

    Args:
        offset, redshift, transient: see :class:`OffsetPrior`, :class:`RedshiftModel`,
            :class:`TransientLuminosity`.
        luminosity_functions: band -> :class:`LuminosityFunction` of the catalogues' bands.
        luminosity_weighting: weight galaxies by L / L* (else every galaxy weighs as L*).
        missing_scale_without_redshift: factor on the missing-host density for transients without a
            redshift when the associator ranks them by DLR (``without_redshift: dlr``, as at alert
            time; their probabilities then use neither redshift nor magnitude). Marginalised over
            all redshifts up to ``z_max``, the density of uncatalogued hosts is dominated by the
            large volume at high z; the factor recalibrates it on transients of known outcome with
            their redshifts hidden (``hybrid bench context``: maximum likelihood of "a catalogued
            galaxy at the transient's redshift" on half the ZTF BTS, checked on the other half).
            1 leaves the model as derived.
    """

    offset: OffsetPrior = field(default_factory=OffsetPrior)
    redshift: RedshiftModel = field(default_factory=RedshiftModel)
    transient: TransientLuminosity = field(default_factory=TransientLuminosity)
    luminosity_functions: Mapping[str, LuminosityFunction] = field(
        default_factory=lambda: dict(DEFAULT_LUMINOSITY_FUNCTIONS)
    )
    luminosity_weighting: bool = True
    missing_scale_without_redshift: float = 1.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | HostPriors | None) -> HostPriors:
        if isinstance(cfg, HostPriors):
            return cfg
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown prior option(s) {unknown}; known: {[f.name for f in fields(cls)]}")
        lfs = dict(DEFAULT_LUMINOSITY_FUNCTIONS)
        lfs.update(
            {b: _build(LuminosityFunction, v) for b, v in dict(cfg.get("luminosity_functions") or {}).items()}
        )
        return cls(
            offset=_build(OffsetPrior, cfg.get("offset")),
            redshift=_build(RedshiftModel, cfg.get("redshift")),
            transient=_build(TransientLuminosity, cfg.get("transient")),
            luminosity_functions=lfs,
            luminosity_weighting=bool(cfg.get("luminosity_weighting", True)),
            missing_scale_without_redshift=float(cfg.get("missing_scale_without_redshift", 1.0)),
        )

    def luminosity_function(self, band: str) -> LuminosityFunction:
        try:
            return self.luminosity_functions[band]
        except KeyError:
            known = ", ".join(sorted(self.luminosity_functions))
            raise KeyError(
                f"no luminosity function for band {band!r} (priors.luminosity_functions has {known})"
            ) from None
