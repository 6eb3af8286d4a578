"""Label cleaning before training: flag rows whose label is probably wrong, then drop or relabel them.

Cleaning runs at load time on the rows of the training and validation splits (the test split is
always scored against the truth). Two cleaners, selected by the ``cleaning`` config group:

* ``confident_learning`` -- Northcutt, Jiang & Chuang (2021, JAIR 70, 1373): cleanlab's
  ``find_label_issues`` on *out-of-fold* predicted probabilities, which estimates the joint
  distribution of given and true labels (the confident joint) and flags the rows it finds most
  likely mislabelled. The out-of-fold probabilities come from a cheap catalog-feature model, a
  histogram gradient-boosted classifier (scikit-learn) on the dataset's detection and context
  features, cross-validated in K folds grouped by object (an object's detections never sit in the
  training and the held-out fold at once). It is seconds per fold on 2 cores, where K trainings
  of the fused network would cost K full runs; its probabilities are what the method needs (an
  estimate of p(label | x) not fitted to the row itself), and they miss only the stamp-only cues.
* ``catalog`` -- as the GOTO team cleaned their training set (Killestein et al. 2021, MNRAS 503,
  4838): detections labelled bogus that coincide with a catalogued variable star are removed from
  the bogus class, and detections that cross-match a known minor planet are labelled real asteroids.
  The simulated survey has no VSX or MPC, so both catalogues are emulated from the truth as the
  simulator emulates the MPC (:class:`hybrid.sim.transients.TransientConfig`): a variable star is
  catalogued with probability ``variable_completeness`` (decided per object), an asteroid is known
  when brighter than the depth plus ``asteroid_margin`` and with probability ``asteroid_fraction``
  (decided per detection); real surveys pass their catalogues' matches instead. With
  ``variable_stars: context`` the rule uses the context features alone: any catalogued star within
  the radius (Sherlock's VS class), which also removes genuine bogus residuals at stars.

Each cleaner returns :class:`Flags`; :func:`apply_flags` drops or relabels the flagged rows.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybrid.context.index import SkyIndex
from hybrid.registry import Registry
from hybrid.taxonomy import TRANSIENT_TYPES

ACTIONS = ("drop", "relabel")


@dataclass
class Flags:
    """Per row of the table: flagged, and for a flagged row its action and proposed labels."""

    flagged: np.ndarray  # bool
    action: np.ndarray  # object: "" | "drop" | "relabel"
    new_real: np.ndarray  # bool, the proposed real-bogus label (meaningful where relabelled)
    new_type: np.ndarray  # object, the proposed type label


class Cleaner(ABC):
    """Contract: ``flag(table, considered, seed=, features=) -> Flags`` for the rows where
    ``considered`` is True; ``features`` are the catalog feature columns the model trains on."""

    name: str

    @abstractmethod
    def flag(
        self, table: pd.DataFrame, considered: np.ndarray, *, seed: int, features: list[str]
    ) -> Flags: ...


CLEANERS: Registry[Cleaner] = Registry("label cleaner", "hybrid.noise", contract=Cleaner)


def _stable_uniform(keys: pd.Series, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per key, the same in every run (CRC32 of ``salt:key``)."""
    return np.array([zlib.crc32(f"{salt}:{k}".encode()) / 2**32 for k in keys.astype(str)])


def apply_flags(table: pd.DataFrame, flags: Flags) -> pd.DataFrame:
    """``table`` without the rows flagged for dropping, with the relabelled rows' new labels."""
    out = table.copy()
    relabel = flags.flagged & (flags.action == "relabel")
    real = out["label_real"].to_numpy(bool).copy()
    types = out["label_type"].to_numpy(object).copy()
    real[relabel], types[relabel] = flags.new_real[relabel], flags.new_type[relabel]
    out["label_real"], out["label_type"] = real, types
    return out[~(flags.flagged & (flags.action == "drop"))]


@CLEANERS.register("confident_learning")
class ConfidentLearning(Cleaner):
    """Confident learning (Northcutt et al. 2021) with out-of-fold catalog-feature probabilities.

    Args:
        action: ``drop`` the flagged rows, or ``relabel`` them with the other class (a row relabelled
            real takes the most probable real type of the out-of-fold model).
        folds: K of the grouped K-fold cross-validation.
        filter_by: cleanlab's ``find_label_issues`` method (``prune_by_noise_rate``, ``both``, ...).
        features: feature columns of the out-of-fold model; ``None`` for the dataset's features.
        max_iter: boosting iterations of the out-of-fold model.
    """

    def __init__(
        self,
        *,
        action: str = "drop",
        folds: int = 5,
        filter_by: str = "prune_by_noise_rate",
        features: list[str] | None = None,
        max_iter: int = 150,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"cleaning.action must be one of {ACTIONS}, got {action!r}")
        if folds < 2:
            raise ValueError(f"cleaning.folds must be at least 2, got {folds}")
        self.action, self.folds, self.filter_by = action, int(folds), filter_by
        self.features, self.max_iter = features, int(max_iter)

    def out_of_fold(self, table: pd.DataFrame, features: list[str], *, seed: int) -> np.ndarray:
        """(N, n_types) out-of-fold type probabilities of the rows of ``table`` (grouped by object)."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.model_selection import GroupKFold

        x = table[features].to_numpy(np.float32)
        y = table["label_type"].map(TRANSIENT_TYPES.index).to_numpy()
        groups = table["object_id"].astype(str).to_numpy() if "object_id" in table else np.arange(len(table))
        prob = np.zeros((len(table), len(TRANSIENT_TYPES)))
        for k, (fit, held) in enumerate(GroupKFold(self.folds).split(x, y, groups)):
            model = HistGradientBoostingClassifier(max_iter=self.max_iter, random_state=seed + k)
            model.fit(x[fit], y[fit])
            prob[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
        return prob

    def flag(self, table: pd.DataFrame, considered: np.ndarray, *, seed: int, features: list[str]) -> Flags:
        from cleanlab.filter import find_label_issues

        rows = table[considered]
        prob = self.out_of_fold(rows, self.features or features, seed=seed)
        p_real = 1.0 - prob[:, 0]
        given = rows["label_real"].to_numpy(bool).astype(int)
        issues = find_label_issues(given, np.c_[1 - p_real, p_real], filter_by=self.filter_by)
        n = len(table)
        flagged = np.zeros(n, bool)
        flagged[np.flatnonzero(considered)[issues]] = True
        new_real = ~table["label_real"].to_numpy(bool)
        best_real_type = np.full(n, "bogus", dtype=object)
        best_real_type[considered] = np.asarray(TRANSIENT_TYPES, object)[1 + prob[:, 1:].argmax(axis=1)]
        new_type = np.where(new_real, best_real_type, "bogus")
        return Flags(flagged, np.where(flagged, self.action, ""), new_real, new_type)


@CLEANERS.register("catalog")
class CatalogCleaning(Cleaner):
    """GOTO-style catalogue cleaning (Killestein et al. 2021); see the module docstring.

    Args:
        variable_stars: ``catalog`` (an emulated variable-star catalogue) or ``context`` (any
            catalogued star within ``radius``, from ``ctx_nearest_star_dist``); ``none`` to skip.
        radius: cross-match radius (arcsec).
        variable_completeness: fraction of variable stars in the emulated catalogue.
        asteroids: relabel bogus-labelled known minor planets as real asteroids.
        asteroid_margin: asteroids brighter than depth_m5 + this (mag) can be known.
        asteroid_fraction: fraction of those that are known.
    """

    def __init__(
        self,
        *,
        variable_stars: str = "catalog",
        radius: float = 1.5,
        variable_completeness: float = 0.9,
        asteroids: bool = True,
        asteroid_margin: float = -0.5,
        asteroid_fraction: float = 0.95,
    ) -> None:
        if variable_stars not in ("catalog", "context", "none"):
            raise ValueError(
                f"cleaning.variable_stars must be catalog, context or none, got {variable_stars!r}"
            )
        self.variable_stars, self.radius = variable_stars, float(radius)
        self.variable_completeness = float(variable_completeness)
        self.asteroids = asteroids
        self.asteroid_margin, self.asteroid_fraction = float(asteroid_margin), float(asteroid_fraction)

    def near_variable_star(self, table: pd.DataFrame) -> np.ndarray:
        """Rows within ``radius`` of a catalogued variable star (or of any star, in context mode)."""
        if self.variable_stars == "none":
            return np.zeros(len(table), bool)
        if self.variable_stars == "context":
            if "ctx_nearest_star_dist" not in table.columns:
                raise KeyError("catalog cleaning with variable_stars=context needs ctx_nearest_star_dist")
            return table["ctx_nearest_star_dist"].to_numpy(float) < self.radius
        var = table[table["truth_type"] == "variable_star"]
        stars = var.groupby("object_id")[["ra", "dec"]].mean()
        stars = stars[_stable_uniform(stars.index.to_series(), "vsx") < self.variable_completeness]
        catalogue = SkyIndex(stars["ra"].to_numpy(), stars["dec"].to_numpy())
        sep, _ = catalogue.query(
            table["ra"].to_numpy(), table["dec"].to_numpy(), radius_arcsec=self.radius, k=1
        )
        return np.isfinite(sep[:, 0])

    def known_asteroid(self, table: pd.DataFrame) -> np.ndarray:
        """Rows that are minor planets known to the (emulated) MPC."""
        if not self.asteroids:
            return np.zeros(len(table), bool)
        keys = (
            table["field"].astype(str)
            + ":"
            + table["epoch"].astype(str)
            + ":"
            + table["transient_id"].astype(str)
        )
        bright = table["truth_mag"].to_numpy(float) < table["depth_m5"].to_numpy(float) + self.asteroid_margin
        known = _stable_uniform(keys, "mpc") < self.asteroid_fraction
        return (table["truth_type"] == "asteroid").to_numpy() & bright & known

    def flag(self, table: pd.DataFrame, considered: np.ndarray, *, seed: int, features: list[str]) -> Flags:
        bogus = ~table["label_real"].to_numpy(bool) & considered
        asteroid = bogus & self.known_asteroid(table)
        variable = bogus & ~asteroid & self.near_variable_star(table)
        flagged = asteroid | variable
        action = np.where(asteroid, "relabel", np.where(variable, "drop", ""))
        new_real = table["label_real"].to_numpy(bool) | asteroid
        new_type = np.where(asteroid, "asteroid", table["label_type"].to_numpy(object))
        return Flags(flagged, action.astype(object), new_real, new_type.astype(object))
