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
  held-out accuracy is tested against chance with a binomial test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier

from hybrid.registry import Registry

DRIFT_TESTS: Registry[DriftTest] = Registry("drift test", "hybrid.monitoring")


@dataclass
class MonitorSample:
    """What the monitors look at for a set of candidates (any part may be absent).

    Attributes:
        scores: (N,) real-bogus probabilities.
        features: (N, F) catalog features by name (NaN where missing).
        embeddings: (N, D) image-encoder embeddings.
    """

    scores: np.ndarray | None = None
    features: pd.DataFrame | None = None
    embeddings: np.ndarray | None = None

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
        )

    def take(self, index: np.ndarray) -> MonitorSample:
        """The rows ``index``."""
        return MonitorSample(
            None if self.scores is None else self.scores[index],
            None if self.features is None else self.features.iloc[index].reset_index(drop=True),
            None if self.embeddings is None else self.embeddings[index],
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

    Args:
        correction: ``holm``, ``bonferroni`` or ``bh``.
        min_count: features with fewer finite values than this in either sample are skipped.
    """

    needs = "features"

    def __init__(
        self, *, correction: str = "holm", min_count: int = 20, alpha: float = 0.05, seed: int = 0
    ) -> None:
        super().__init__(alpha=alpha, seed=seed)
        adjust_p_values(np.array([0.5]), correction)  # validates the name
        self.correction, self.min_count = correction, min_count

    def test(self, current: MonitorSample) -> DriftResult:
        ref: pd.DataFrame = self.part(self._reference(), "reference")
        cur: pd.DataFrame = self.part(current, "current")
        names, stat, p = [], [], []
        for col in ref.columns.intersection(cur.columns):
            a = pd.to_numeric(ref[col], errors="coerce").to_numpy(float)
            b = pd.to_numeric(cur[col], errors="coerce").to_numpy(float)
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if len(a) < self.min_count or len(b) < self.min_count:
                continue
            res = stats.ks_2samp(a, b)
            names.append(col)
            stat.append(res.statistic)
            p.append(res.pvalue)
        if not names:
            return self._result(0.0, 1.0, len(cur), n_features=0, top_features={})
        adj = adjust_p_values(np.array(p), self.correction)
        worst = np.argsort(adj)[:5]
        top = {names[i]: {"ks": float(stat[i]), "p_adjusted": float(adj[i])} for i in worst}
        return self._result(
            float(np.max(stat)),
            float(adj.min()),
            len(cur),
            n_features=len(names),
            n_drifted_features=int((adj < self.alpha).sum()),
            top_features=top,
        )


def _sq_dists(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def mmd_permutation(
    x: np.ndarray, y: np.ndarray, *, n_permutations: int = 200, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Unbiased MMD^2 of samples ``x`` (n, d) and ``y`` (m, d) with a Gaussian kernel whose bandwidth
    is the median pairwise distance of the pooled sample; returns (MMD^2, permutation p-value,
    bandwidth)."""
    z = np.concatenate([x, y]).astype(np.float64)
    n, m = len(x), len(y)
    d2 = _sq_dists(z)
    off = d2[np.triu_indices(len(z), 1)]
    bandwidth = float(np.sqrt(np.median(off[off > 0]))) if (off > 0).any() else 1.0
    k = np.exp(-d2 / (2.0 * bandwidth**2))
    np.fill_diagonal(k, 0.0)  # the unbiased estimator leaves out i == j
    labels = np.zeros((n_permutations + 1, n + m), bool)
    labels[0, :n] = True
    for i in range(1, n_permutations + 1):
        labels[i, rng.permutation(n + m)[:n]] = True
    a = labels.astype(np.float64)  # indicator of "x" per permutation
    b = 1.0 - a
    ka, kb = k @ a.T, k @ b.T
    sxx = (a.T * ka).sum(axis=0)
    syy = (b.T * kb).sum(axis=0)
    sxy = (a.T * kb).sum(axis=0)
    mmd2 = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)
    p = (1.0 + np.sum(mmd2[1:] >= mmd2[0])) / (1.0 + n_permutations)
    return float(mmd2[0]), float(p), bandwidth


@DRIFT_TESTS.register("mmd")
class MMDTest(DriftTest):
    """MMD permutation test on image-encoder embeddings.

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
        x = np.asarray(self.part(self._reference(), "reference"), float)
        y = np.asarray(self.part(current, "current"), float)
        x = x[rng.permutation(len(x))[: self.max_samples]]
        y = y[rng.permutation(len(y))[: self.max_samples]]
        if len(x) < 2 or len(y) < 2:
            raise ValueError(f"mmd needs at least 2 rows in each sample, got {len(x)} and {len(y)}")
        mmd2, p, bw = mmd_permutation(x, y, n_permutations=self.n_permutations, rng=rng)
        return self._result(mmd2, p, len(current), bandwidth=bw, n_permutations=self.n_permutations)


@DRIFT_TESTS.register("classifier")
class ClassifierTest(DriftTest):
    """Classifier two-sample test on the catalog features (or, with ``on: embeddings``, the
    embeddings): equal-sized samples, a stratified half to train, a binomial test of the held-out
    accuracy against 1/2.

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
        ref, cur = self.part(self._reference(), "reference"), self.part(current, "current")
        if isinstance(ref, pd.DataFrame):
            cols = ref.columns.intersection(cur.columns)
            ref, cur = ref[cols].to_numpy(float), cur[cols].to_numpy(float)
        ref, cur = np.asarray(ref, float), np.asarray(cur, float)
        n = min(len(ref), len(cur), self.max_samples)
        if n < 10:
            raise ValueError(f"the classifier test needs at least 10 rows per sample, got {n}")
        x = np.concatenate([ref[rng.permutation(len(ref))[:n]], cur[rng.permutation(len(cur))[:n]]])
        y = np.r_[np.zeros(n, int), np.ones(n, int)]
        # stratified halves: each half holds n // 2 rows of each sample
        train = np.zeros(2 * n, bool)
        train[rng.permutation(n)[: n // 2]] = True
        train[n + rng.permutation(n)[: n // 2]] = True
        clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=self.seed)
        clf.fit(x[train], y[train])
        correct = int((clf.predict(x[~train]) == y[~train]).sum())
        n_test = int((~train).sum())
        p = stats.binomtest(correct, n_test, 0.5, alternative="greater").pvalue
        return self._result(correct / n_test, p, len(current), n_test=n_test, on=self.needs)


def build_tests(names: list[str] | None = None, **common: Any) -> list[DriftTest]:
    """Instances of the named tests (all registered ones by default) with ``common`` arguments."""
    return [DRIFT_TESTS.get(name)(**common) for name in (names or DRIFT_TESTS.names())]
