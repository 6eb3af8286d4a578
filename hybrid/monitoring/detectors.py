"""Two-sample drift tests: is the current sample drawn from the reference distribution?

Each test is registered in :data:`DRIFT_TESTS` and honours one contract: ``fit(reference)`` on a
:class:`MonitorSample` of the training-era data, then ``test(current) -> DriftResult`` with a
statistic, a p-value under "no drift", and ``drifted = p_value < alpha``. Every p-value is valid at
its nominal rate (tested over repeated null draws in tests/test_monitoring.py), so alarms on a
drift-free stream happen at rate ``alpha`` per window and no more.

* ``psi``: population stability index of the real-bogus scores over reference-quantile bins
  (Siddiqi 2006, "Credit Risk Scorecards"; rule of thumb: < 0.1 stable, > 0.25 shifted), with the
  chi-square null distribution of Yurdakul (2018, "Statistical properties of population stability
  index", PhD thesis, Western Michigan University): PSI ~ (1/N + 1/M) chi2(B - 1).
* ``ks``: a two-sample Kolmogorov-Smirnov test per catalog feature, p-values corrected for the number
  of features (Holm 1979 by default; Bonferroni, or Benjamini & Hochberg 1995 for the FDR).
* ``mmd``: the unbiased squared maximum mean discrepancy with a Gaussian kernel (bandwidth by the
  median heuristic) on image-encoder embeddings, with a permutation p-value (Gretton et al. 2012,
  JMLR 13, 723; used for drift on learned representations by Rabanser, Guennemann & Lipton 2019,
  NeurIPS, "Failing Loudly").
* ``classifier``: a classifier two-sample test (Lopez-Paz & Oquab 2017, ICLR): a gradient-boosted
  classifier learns to tell reference from current rows on one half and is scored on the other; its
  held-out ranking of current above reference is tested against chance (Mann-Whitney).

Candidates of one exposure share its seeing, depth and sky, so a stream's candidates are not
independent draws; a test that assumes they are raises false alarms whenever the current window holds
other exposures than the reference, which is always. Given each candidate's exposure
(:attr:`MonitorSample.groups`), ``ks``, ``mmd`` and ``classifier`` take whole exposures as the
exchangeable units (group permutations, Westfall & Young 1993 max-T for KS, group-wise splits for the
classifier); measured in reports/drift.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier

from hybrid.registry import Registry


@dataclass
class MonitorSample:
    """What the monitors look at for a set of candidates (any part may be absent).

    Attributes:
        scores: (N,) real-bogus probabilities.
        features: (N, F) catalog features by name (NaN where missing).
        embeddings: (N, D) image-encoder embeddings.
        groups: (N,) the exposure (or other unit) each candidate came from. Candidates of one
            exposure share its seeing, depth and sky, so they are not independent; with groups, the
            tests that take them (``ks``, ``mmd``, ``classifier``) treat whole groups as the units
            that are exchangeable under "no drift". Without, candidates are taken as independent.
    """

    scores: np.ndarray | None = None
    features: pd.DataFrame | None = None
    embeddings: np.ndarray | None = None
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        for part in (self.scores, self.features, self.embeddings):
            if part is not None:
                return len(part)
        return 0

    @classmethod
    def concat(cls, samples: list[MonitorSample]) -> MonitorSample:
        """The rows of ``samples`` one after the other (a part is kept when every sample has it)."""

        def join(parts: list) -> np.ndarray | pd.DataFrame | None:
            if any(p is None for p in parts):
                return None
            if isinstance(parts[0], pd.DataFrame):
                return pd.concat(parts, ignore_index=True)
            return np.concatenate(parts)

        return cls(
            join([s.scores for s in samples]),
            join([s.features for s in samples]),
            join([s.embeddings for s in samples]),
            join([s.groups for s in samples]),
        )

    def take(self, index: np.ndarray) -> MonitorSample:
        """The rows ``index``."""
        return MonitorSample(
            None if self.scores is None else self.scores[index],
            None if self.features is None else self.features.iloc[index].reset_index(drop=True),
            None if self.embeddings is None else self.embeddings[index],
            None if self.groups is None else self.groups[index],
        )


@dataclass
class DriftResult:
    """The outcome of one test on one current sample."""

    test: str
    statistic: float
    p_value: float
    alpha: float
    n_reference: int
    n_current: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return bool(self.p_value < self.alpha)

    def as_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            **self.details,
        }


class DriftTest:
    """Contract of a drift test; ``needs`` names the :class:`MonitorSample` part it reads."""

    name: ClassVar[str]
    needs: ClassVar[str]

    def __init__(self, *, alpha: float = 0.05, seed: int = 0) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha, self.seed = alpha, seed
        self.reference: MonitorSample | None = None

    def part(self, sample: MonitorSample, role: str) -> Any:
        value = getattr(sample, self.needs)
        if value is None:
            raise ValueError(f"the {self.name} test needs {self.needs} of the {role} sample, which has none")
        return value

    def fit(self, reference: MonitorSample) -> DriftTest:
        self.part(reference, "reference")
        self.reference = reference
        return self

    def test(self, current: MonitorSample) -> DriftResult:
        raise NotImplementedError

    def _result(self, statistic: float, p_value: float, n_cur: int, **details: Any) -> DriftResult:
        n_ref = len(self.reference) if self.reference is not None else 0
        return DriftResult(self.name, float(statistic), float(p_value), self.alpha, n_ref, n_cur, details)

    def _reference(self) -> MonitorSample:
        if self.reference is None:
            raise RuntimeError(f"{self.name}: call fit(reference) before test(current)")
        return self.reference


DRIFT_TESTS: Registry[DriftTest] = Registry(
    "drift test", "hybrid.monitoring", contract=DriftTest, modules=("detectors",)
)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10, eps: float = 1e-4) -> tuple[float, int]:
    """Population stability index over ``bins`` reference-quantile bins; returns (PSI, bins used)."""
    reference, current = np.asarray(reference, float), np.asarray(current, float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    r = np.clip(r / r.sum(), eps, None)
    c = np.clip(c / c.sum(), eps, None)
    return float(((c - r) * np.log(c / r)).sum()), len(edges) + 1


@DRIFT_TESTS.register("psi")
class PSITest(DriftTest):
    """PSI of the real-bogus scores (``bins`` reference-quantile bins)."""

    needs = "scores"

    def __init__(self, *, bins: int = 10, alpha: float = 0.05, seed: int = 0) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.bins = bins

    def test(self, current: MonitorSample) -> DriftResult:
        ref = np.asarray(self.part(self._reference(), "reference"), float)
        cur = np.asarray(self.part(current, "current"), float)
        value, used = psi(ref, cur, self.bins)
        scale = 1.0 / len(ref) + 1.0 / len(cur)
        p = stats.chi2.sf(value / scale, used - 1) if used > 1 else 1.0
        band = "stable" if value < 0.1 else "moderate" if value < 0.25 else "major"
        return self._result(value, p, len(cur), bins=used, band=band)


def _group_codes(reference: MonitorSample, current: MonitorSample) -> np.ndarray:
    """Integer group ids over the pooled (reference, current) rows; every row is its own group when
    either sample has no groups, and a reference group never shares an id with a current one."""
    n, m = len(reference), len(current)
    if reference.groups is None or current.groups is None:
        return np.arange(n + m)
    keys = np.r_[[f"r:{g}" for g in reference.groups], [f"c:{g}" for g in current.groups]]
    return pd.factorize(keys)[0]


def permutation_labels(
    codes: np.ndarray, n_first: int, n_permutations: int, rng: np.random.Generator
) -> np.ndarray:
    """(P + 1, N) booleans marking the "reference" rows: row 0 is the observed split (the first
    ``n_first`` rows), rows 1..P assign whole groups (``codes``) at random, keeping the number of
    reference groups. With one group per row this is the ordinary permutation test."""
    n_groups = int(codes.max()) + 1
    n_ref_groups = len(np.unique(codes[:n_first]))
    labels = np.zeros((n_permutations + 1, len(codes)), bool)
    labels[0, :n_first] = True
    for i in range(1, n_permutations + 1):
        chosen = np.zeros(n_groups, bool)
        chosen[rng.permutation(n_groups)[:n_ref_groups]] = True
        labels[i] = chosen[codes]
    return labels


def ks_statistics(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two-sample KS statistic of ``values`` (N,) for each split in ``labels`` (P, N) at once (NaN
    values are left out)."""
    finite = np.isfinite(values)
    v, lab = values[finite], labels[:, finite]
    order = np.argsort(v, kind="stable")
    v, a = v[order], lab[:, order].astype(np.float64)
    ca = np.cumsum(a, axis=1) / np.maximum(a.sum(axis=1, keepdims=True), 1)
    cb = np.cumsum(1.0 - a, axis=1) / np.maximum((1.0 - a).sum(axis=1, keepdims=True), 1)
    last = np.r_[v[1:] != v[:-1], True]  # the ECDFs are compared after each run of tied values
    return np.abs(ca - cb)[:, last].max(axis=1)


def adjust_p_values(p: np.ndarray, method: str) -> np.ndarray:
    """Multiple-testing adjusted p-values: ``bonferroni``, ``holm`` (family-wise error) or ``bh``
    (Benjamini-Hochberg false discovery rate)."""
    p = np.asarray(p, float)
    m = len(p)
    if m == 0:
        return p
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p)
    ranked = p[order]
    if method == "holm":
        adj = np.minimum(np.maximum.accumulate(ranked * (m - np.arange(m))), 1.0)
    elif method == "bh":
        adj = np.minimum(np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1], 1.0)
    else:
        raise ValueError(f"correction must be bonferroni, holm or bh, got {method!r}")
    out = np.empty(m)
    out[order] = adj
    return out


@DRIFT_TESTS.register("ks")
class KSTest(DriftTest):
    """Per-feature two-sample KS tests with a multiple-testing correction.

    Without groups, each feature's asymptotic KS p-value is corrected over the features (``holm``,
    ``bonferroni`` or ``bh``). With groups (see :class:`MonitorSample`), the null distribution comes
    from permuting whole groups between the samples, and the correction is Westfall & Young's (1993)
    single-step max-T: a feature's adjusted p-value is the fraction of permutations whose largest KS
    statistic over all features reaches the feature's own (family-wise error control).

    Args:
        correction: ``holm``, ``bonferroni`` or ``bh`` (without groups).
        min_count: features with fewer finite values than this in either sample are skipped.
        n_permutations: permutations of the groups (with groups).
    """

    needs = "features"

    def __init__(
        self,
        *,
        correction: str = "holm",
        min_count: int = 20,
        n_permutations: int = 500,
        alpha: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__(alpha=alpha, seed=seed)
        adjust_p_values(np.array([0.5]), correction)  # validates the name
        self.correction, self.min_count, self.n_permutations = correction, min_count, n_permutations

    def test(self, current: MonitorSample) -> DriftResult:
        reference = self._reference()
        ref: pd.DataFrame = self.part(reference, "reference")
        cur: pd.DataFrame = self.part(current, "current")
        names = []
        for col in ref.columns.intersection(cur.columns):
            a = pd.to_numeric(ref[col], errors="coerce").to_numpy(float)
            b = pd.to_numeric(cur[col], errors="coerce").to_numpy(float)
            if np.isfinite(a).sum() >= self.min_count and np.isfinite(b).sum() >= self.min_count:
                names.append(col)
        if not names:
            return self._result(0.0, 1.0, len(cur), n_features=0, top_features={})
        pooled = pd.concat([ref[names], cur[names]], ignore_index=True).apply(pd.to_numeric, errors="coerce")
        grouped = reference.groups is not None and current.groups is not None
        if grouped:
            rng = np.random.default_rng(self.seed)
            labels = permutation_labels(_group_codes(reference, current), len(ref), self.n_permutations, rng)
            d = np.stack([ks_statistics(pooled[c].to_numpy(float), labels) for c in names], axis=1)
            stat = d[0]
            max_null = d[1:].max(axis=1)
            adj = (1.0 + (max_null[:, None] >= stat[None, :]).sum(axis=0)) / (1.0 + self.n_permutations)
        else:
            res = [
                stats.ks_2samp(*(x[np.isfinite(x)] for x in (ref[c].to_numpy(float), cur[c].to_numpy(float))))
                for c in names
            ]
            stat = np.array([r.statistic for r in res])
            adj = adjust_p_values(np.array([r.pvalue for r in res]), self.correction)
        worst = np.argsort(adj, kind="stable")[:5]
        top = {names[i]: {"ks": float(stat[i]), "p_adjusted": float(adj[i])} for i in worst}
        return self._result(
            float(np.max(stat)),
            float(adj.min()),
            len(cur),
            n_features=len(names),
            n_drifted_features=int((adj < self.alpha).sum()),
            correction="westfall-young max-T over groups" if grouped else self.correction,
            top_features=top,
        )


def _sq_dists(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def mmd_permutation(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int = 200,
    rng: np.random.Generator,
    codes: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Unbiased MMD^2 of samples ``x`` (n, d) and ``y`` (m, d) with a Gaussian kernel whose bandwidth
    is the median pairwise distance of the pooled sample; returns (MMD^2, permutation p-value,
    bandwidth). ``codes`` (n + m,) are group ids over the pooled rows: whole groups are permuted."""
    z = np.concatenate([x, y]).astype(np.float64)
    n = len(x)
    d2 = _sq_dists(z)
    off = d2[np.triu_indices(len(z), 1)]
    bandwidth = float(np.sqrt(np.median(off[off > 0]))) if (off > 0).any() else 1.0
    k = np.exp(-d2 / (2.0 * bandwidth**2))
    np.fill_diagonal(k, 0.0)  # the unbiased estimator leaves out i == j
    codes = np.arange(len(z)) if codes is None else codes
    a = permutation_labels(codes, n, n_permutations, rng).astype(np.float64)  # "x" per permutation
    b = 1.0 - a
    na, nb = a.sum(axis=1), b.sum(axis=1)
    ka, kb = k @ a.T, k @ b.T
    sxx = (a.T * ka).sum(axis=0)
    syy = (b.T * kb).sum(axis=0)
    sxy = (a.T * kb).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mmd2 = sxx / (na * (na - 1)) + syy / (nb * (nb - 1)) - 2.0 * sxy / (na * nb)
    mmd2 = np.nan_to_num(mmd2, nan=-np.inf)  # a permutation with a one-row sample counts as no drift
    p = (1.0 + np.sum(mmd2[1:] >= mmd2[0])) / (1.0 + n_permutations)
    return float(mmd2[0]), float(p), bandwidth


@DRIFT_TESTS.register("mmd")
class MMDTest(DriftTest):
    """MMD permutation test on image-encoder embeddings (whole groups permuted, with groups).

    Args:
        n_permutations: permutations of the pooled sample.
        max_samples: each sample is subsampled (without replacement) to at most this many rows.
    """

    needs = "embeddings"

    def __init__(
        self, *, n_permutations: int = 200, max_samples: int = 500, alpha: float = 0.05, seed: int = 0
    ) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.n_permutations, self.max_samples = n_permutations, max_samples

    def test(self, current: MonitorSample) -> DriftResult:
        rng = np.random.default_rng(self.seed)
        reference = self._reference()
        self.part(reference, "reference")
        self.part(current, "current")
        ref = reference.take(rng.permutation(len(reference))[: self.max_samples])
        cur = current.take(rng.permutation(len(current))[: self.max_samples])
        x, y = np.asarray(ref.embeddings, float), np.asarray(cur.embeddings, float)
        if len(x) < 2 or len(y) < 2:
            raise ValueError(f"mmd needs at least 2 rows in each sample, got {len(x)} and {len(y)}")
        codes = _group_codes(ref, cur)
        mmd2, p, bw = mmd_permutation(x, y, n_permutations=self.n_permutations, rng=rng, codes=codes)
        return self._result(mmd2, p, len(current), bandwidth=bw, n_permutations=self.n_permutations)


@DRIFT_TESTS.register("classifier")
class ClassifierTest(DriftTest):
    """Classifier two-sample test on the catalog features (or, with ``on: embeddings``, the
    embeddings): equal-sized samples, half of each to train a gradient-boosted classifier, and a
    one-sided Mann-Whitney test that its held-out scores rank current rows above reference ones
    (statistic: the held-out ROC AUC; 0.5 under no drift). With groups, the halves are split by group
    and the held-out unit is the group (its mean score), so that memorising an exposure's seeing or
    depth cannot pass for drift.

    Args:
        on: ``features`` or ``embeddings``.
        max_samples: each sample is subsampled to at most this many rows (and the larger to the size
            of the smaller).
    """

    needs = "features"

    def __init__(
        self, *, on: str = "features", max_samples: int = 2000, alpha: float = 0.05, seed: int = 0
    ) -> None:
        super().__init__(alpha=alpha, seed=seed)
        if on not in ("features", "embeddings"):
            raise ValueError(f"on must be features or embeddings, got {on!r}")
        self.needs = on  # type: ignore[misc]
        self.max_samples = max_samples

    def test(self, current: MonitorSample) -> DriftResult:
        rng = np.random.default_rng(self.seed)
        reference = self._reference()
        self.part(reference, "reference")
        self.part(current, "current")
        n = min(len(reference), len(current), self.max_samples)
        if n < 10:
            raise ValueError(f"the classifier test needs at least 10 rows per sample, got {n}")
        ref = reference.take(rng.permutation(len(reference))[:n])
        cur = current.take(rng.permutation(len(current))[:n])
        a, b = getattr(ref, self.needs), getattr(cur, self.needs)
        if isinstance(a, pd.DataFrame):
            cols = a.columns.intersection(b.columns)
            a, b = a[cols], b[cols]
        x = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
        y = np.r_[np.zeros(n, int), np.ones(n, int)]
        codes = _group_codes(ref, cur)
        # half of each sample's groups (rows, without groups) train the classifier
        train_group = np.zeros(int(codes.max()) + 1, bool)
        for side in (codes[:n], codes[n:]):
            g = np.unique(side)
            train_group[rng.permutation(g)[: len(g) // 2]] = True
        train = train_group[codes]
        if train.all() or not train.any() or len(np.unique(y[train])) < 2:
            raise ValueError("the classifier test needs at least two groups in each sample")
        clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=self.seed)
        clf.fit(x[train], y[train])
        held = pd.DataFrame({"g": codes[~train], "y": y[~train], "p": clf.predict_proba(x[~train])[:, 1]})
        units = held.groupby("g").agg(y=("y", "first"), p=("p", "mean"))
        p_cur, p_ref = units.loc[units["y"] == 1, "p"], units.loc[units["y"] == 0, "p"]
        res = stats.mannwhitneyu(p_cur, p_ref, alternative="greater")
        auc = float(res.statistic) / (len(p_cur) * len(p_ref))
        return self._result(auc, float(res.pvalue), len(current), n_test_units=len(units), on=self.needs)


def build_tests(names: list[str] | None = None, **common: Any) -> list[DriftTest]:
    """Instances of the named tests (all registered ones by default) with ``common`` arguments."""
    return [DRIFT_TESTS.get(name)(**common) for name in (names or DRIFT_TESTS.names())]
