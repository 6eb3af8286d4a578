"""Label-noise injection: flip real-bogus labels of a built dataset, deterministically, recorded per row.

Injection is a curation step, but it runs at load time on an already-built dataset directory rather
than inside the build: a build redoes subtraction and detection for every field, whereas flipping
labels needs nothing but the candidate table, and the truth columns (``truth_real``, ``truth_type``,
``bogus_kind``) that every row keeps make every flip measurable. The flips are a pure function of
(seed, dataset row): each row draws one uniform number ``u`` from a generator seeded by the seed and
is flipped when ``u < p``, its flip probability under the noise model. The rows flipped at a rate
are therefore a subset of those flipped at any higher rate (nested noise), which removes one source
of variance from rate sweeps.

Noise models (class-conditional unless stated; Frénay & Verleysen 2014 give the taxonomy):

* ``symmetric`` -- every label flips with probability ``rate`` (noise completely at random);
* ``real_to_bogus`` -- real labels flip to bogus with probability ``rate`` (faint or nuclear
  transients a scanner missed); optionally only some true types;
* ``bogus_to_real`` -- bogus labels of some bogus kinds (by default residuals at stars) flip to real
  with probability ``rate``, labelled as variable stars (a scanner mistaking a subtraction residual
  at a star for variability);
* ``magnitude`` -- both classes, with a probability that rises with the candidate's magnitude (a
  logistic in mag around a pivot), scaled so that the mean over the affected rows is ``rate``: faint
  candidates are the hard ones to vet.

``rate`` is always the fraction of the *eligible* rows (those of the source class and kinds) that
flip, so the realised rate is checked against it (tests do, with binomial tolerances).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import pandas as pd

from hybrid.registry import Registry
from hybrid.taxonomy import BOGUS_KINDS, TRANSIENT_TYPES

#: Columns added to the candidate table by injection.
CLEAN_REAL, CLEAN_TYPE, FLIPPED = "label_real_clean", "label_type_clean", "noise_flipped"


class LabelNoise(ABC):
    """Contract: :meth:`probability` gives each eligible row's flip probability; :meth:`__call__` flips.

    Args:
        rate: fraction of the eligible rows that flip, in [0, 1].
        splits: splits whose labels are corrupted (the test split is scored against the truth
            whatever its labels, see :func:`hybrid.evaluation.evaluate`).
        real_type: transient type given to rows flipped to real; ``None`` draws it from the real
            types' frequencies among the affected rows' labels.
    """

    name: str

    def __init__(
        self, rate: float, *, splits: Sequence[str] = ("train", "val"), real_type: str | None = None
    ) -> None:
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"noise.rate must be in [0, 1], got {rate}")
        if real_type is not None and real_type not in TRANSIENT_TYPES[1:]:
            raise ValueError(
                f"noise.real_type {real_type!r} is not a real type; known: {TRANSIENT_TYPES[1:]}"
            )
        self.rate = float(rate)
        self.splits = list(splits)
        self.real_type = real_type

    @abstractmethod
    def probability(self, table: pd.DataFrame) -> np.ndarray:
        """Flip probability of every row of ``table`` (labels as they are now)."""

    def __call__(self, table: pd.DataFrame, *, seed: int) -> pd.DataFrame:
        """``table`` with flipped ``label_real`` / ``label_type`` and the columns
        ``label_real_clean``, ``label_type_clean`` (the labels before injection) and ``noise_flipped``.

        The table's index must be the dataset row number (as :func:`hybrid.data.dataset.read_dataset`
        gives it), which keys the draws.
        """
        for col in ("label_real", "label_type", "split"):
            if col not in table.columns:
                raise KeyError(f"label noise needs the candidate column {col!r}")
        rows = table.index.to_numpy()
        if len(rows) and rows.min() < 0:
            raise ValueError("label noise: the table index must be dataset row numbers (>= 0)")
        size = int(rows.max()) + 1 if len(rows) else 0
        rng = np.random.default_rng([int(seed), 0x4E015E])
        u = rng.random(size)[rows]
        pick = rng.random(size)[rows]  # a second stream: the type of a row flipped to real
        p = np.where(table["split"].isin(self.splits).to_numpy(), self.probability(table), 0.0)
        flip = u < p
        out = table.copy()
        real = out["label_real"].to_numpy(bool)
        out[CLEAN_REAL], out[CLEAN_TYPE] = real, out["label_type"].to_numpy(object)
        new_type = out["label_type"].to_numpy(object).copy()
        new_type[flip & real] = "bogus"
        to_real = flip & ~real
        new_type[to_real] = self._real_types(out, real, pick[to_real])
        out["label_real"] = real ^ flip
        out["label_type"] = new_type
        out[FLIPPED] = flip
        return out

    def _real_types(self, table: pd.DataFrame, real: np.ndarray, u: np.ndarray) -> np.ndarray:
        if self.real_type is not None:
            return np.full(u.size, self.real_type, dtype=object)
        types = table.loc[real, "label_type"]
        counts = types.value_counts().reindex(list(TRANSIENT_TYPES[1:]), fill_value=0)
        if counts.sum() == 0:
            counts[:] = 1
        cdf = np.cumsum(counts.to_numpy(float)) / counts.sum()
        return counts.index.to_numpy(object)[np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)]


LABEL_NOISE: Registry[LabelNoise] = Registry("label noise", "hybrid.noise", contract=LabelNoise)


@LABEL_NOISE.register("symmetric")
class SymmetricNoise(LabelNoise):
    """Every label flips with probability ``rate`` (uniform, class-independent noise)."""

    def probability(self, table: pd.DataFrame) -> np.ndarray:
        return np.full(len(table), self.rate)


@LABEL_NOISE.register("real_to_bogus")
class RealToBogusNoise(LabelNoise):
    """Real labels flip to bogus with probability ``rate``.

    Args:
        types: only real rows whose label type is one of these flip (e.g. ``[nuclear]``); ``None``
            for all real types.
    """

    def __init__(self, rate: float, *, types: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(rate, **kwargs)
        unknown = sorted(set(types or ()) - set(TRANSIENT_TYPES[1:]))
        if unknown:
            raise ValueError(f"noise.types: unknown real types {unknown}; known: {TRANSIENT_TYPES[1:]}")
        self.types = None if types is None else list(types)

    def probability(self, table: pd.DataFrame) -> np.ndarray:
        eligible = table["label_real"].to_numpy(bool)
        if self.types is not None:
            eligible = eligible & table["label_type"].isin(self.types).to_numpy()
        return np.where(eligible, self.rate, 0.0)


@LABEL_NOISE.register("bogus_to_real")
class BogusToRealNoise(LabelNoise):
    """Bogus labels of the given bogus kinds flip to real (by default: labelled variable stars).

    Args:
        bogus_kinds: the true bogus kinds (``bogus_kind`` column) that may flip; ``None`` for all.
            The default, residuals at stars, is what a scanner may take for a variable star.
    """

    def __init__(
        self,
        rate: float,
        *,
        bogus_kinds: Sequence[str] | None = ("star_residual",),
        real_type: str | None = "variable_star",
        **kwargs,
    ) -> None:
        super().__init__(rate, real_type=real_type, **kwargs)
        unknown = sorted(set(bogus_kinds or ()) - set(BOGUS_KINDS))
        if unknown:
            raise ValueError(f"noise.bogus_kinds: unknown bogus kinds {unknown}; known: {BOGUS_KINDS}")
        self.bogus_kinds = None if bogus_kinds is None else list(bogus_kinds)

    def probability(self, table: pd.DataFrame) -> np.ndarray:
        eligible = ~table["label_real"].to_numpy(bool)
        if self.bogus_kinds is not None:
            if "bogus_kind" not in table.columns:
                raise KeyError("bogus_to_real noise with bogus_kinds needs the candidate column 'bogus_kind'")
            eligible = eligible & table["bogus_kind"].isin(self.bogus_kinds).to_numpy()
        return np.where(eligible, self.rate, 0.0)


@LABEL_NOISE.register("magnitude")
class MagnitudeNoise(LabelNoise):
    """Both classes flip, more often for fainter candidates.

    ``p_i = rate * s_i / mean(s)`` (clipped to 1) with ``s_i = 1 / (1 + exp(-(m_i - pivot) / width))``,
    the mean taken over the rows of the corrupted splits, so the mean flip probability is ``rate``
    (unless clipping bites, at rates above about 0.4). Rows without a magnitude get ``s = 0.5``.

    Args:
        mag_column: magnitude column (mag).
        pivot: magnitude at the logistic's midpoint (mag); ``None`` for the median of the rows.
        width: logistic scale (mag); smaller is a sharper faint-end cut.
    """

    def __init__(
        self,
        rate: float,
        *,
        mag_column: str = "mag_psf",
        pivot: float | None = None,
        width: float = 0.5,
        **kw,
    ) -> None:
        super().__init__(rate, **kw)
        if width <= 0:
            raise ValueError(f"noise.width must be positive (mag), got {width}")
        self.mag_column, self.pivot, self.width = mag_column, pivot, float(width)

    def probability(self, table: pd.DataFrame) -> np.ndarray:
        if self.mag_column not in table.columns:
            raise KeyError(
                f"magnitude noise needs the candidate column {self.mag_column!r} (noise.mag_column)"
            )
        mag = table[self.mag_column].to_numpy(float)
        inside = table["split"].isin(self.splits).to_numpy()
        finite = np.isfinite(mag)
        pivot = self.pivot if self.pivot is not None else float(np.median(mag[inside & finite]))
        s = np.where(finite, 1.0 / (1.0 + np.exp(-(np.where(finite, mag, pivot) - pivot) / self.width)), 0.5)
        mean = s[inside].mean() if inside.any() else 1.0
        return np.clip(self.rate * s / mean, 0.0, 1.0)
