"""How far simulated candidates are from a real survey's: per-statistic comparison and two-sample tests.

What is compared, for simulated candidates (a dataset directory, :mod:`hybrid.data.dataset`) and real
ones (alerts read by :mod:`hybrid.data.readers`, which give the same columns and the same stamps,
(N, 3, S, S) science / reference / difference in the survey's counts):

* stamp statistics, measured by one function on both (:func:`stamp_statistics`): per channel the
  sigma-clipped background median, the robust noise (1.4826 MAD), the signed peak S/N at the stamp
  centre and the NaN fraction; the FWHM of the difference-image source (adaptive second moments,
  Bernstein & Jarvis 2002, AJ 123, 583); the reference-to-science noise ratio; the sign of the
  difference at the centre;
* every feature (a feature present in one set and missing in the other is reported as such, and
  left out of the two-sample tests, since a model trained with it cannot use it on the other set).

Per statistic: medians, 10th/90th percentiles, the share of real values outside the simulated 1-99%
range, and a flag when the real median lies outside the simulated 10-90% range.

Classifier two-sample tests (Lopez-Paz & Oquab 2017, ICLR; Friedman 2003, "On multivariate
goodness-of-fit and two-sample testing"): a gradient-boosted classifier (scikit-learn's
HistGradientBoostingClassifier) learns to tell simulated from real rows; its 5-fold cross-validated
ROC AUC is 0.5 when the two are indistinguishable and 1 when anything gives the simulation away. The
larger sample is subsampled to the size of the smaller (balanced). Permutation importances (the AUC
lost when a column, or a group of columns, is shuffled in the held-out fold; Breiman 2001) say what
gives it away. One test runs on stamp statistics + features (``c2st_auc``), one on the stamps
themselves, noise-normalised and block-averaged (``c2st_stamps_auc``).

Matched selection: ZTF issues an alert for every difference-image detection at S/N >= 5, positive or
negative (Masci et al. 2019, PASP 131, 018003; Bellm et al. 2019, PASP 131, 018002), real or bogus.
The simulated candidates are cut the same way (``|snr_psf| >= 5``, both signs, the whole real + bogus
mix) and compared with all real alerts.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from hybrid.detection.candidates import CHANNELS

#: alert-issuing S/N cut of ZTF (both signs of the difference)
ALERT_SNR = 5.0
#: side (px) of the central box in which the peak S/N and the centre's sign are measured
CENTRE_BOX = 5
_MAD_TO_SIGMA = 1.4826
_GAUSS_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: stamp statistic -> unit
STAMP_STATISTICS: dict[str, str] = {
    **{f"{ch}_background": "counts" for ch in CHANNELS},
    **{f"{ch}_noise": "counts" for ch in CHANNELS},
    **{f"{ch}_peak_snr": "sigma" for ch in CHANNELS},
    **{f"{ch}_nan_fraction": "" for ch in CHANNELS},
    "diff_fwhm": "arcsec",
    "ref_sci_noise_ratio": "",
    "diff_centre_sign": "+1/-1",
}


class RealismError(ValueError):
    """Inputs that cannot be compared (names what is wrong)."""


def _adaptive_sigma(img: np.ndarray, *, s0: float = 1.5, iterations: int = 10) -> np.ndarray:
    """Gaussian sigma (px) of the source at the centre of each (N, H, W) image by adaptive moments.

    A Gaussian window of width ``s`` on a Gaussian source of width ``sigma`` gives a windowed second
    moment ``m = sigma^2 s^2 / (sigma^2 + s^2)`` per axis, so ``sigma^2 = m s^2 / (s^2 - m)``; the
    window is set to the estimate and iterated (it converges to ``s = sigma``). NaN where the windowed
    flux is not positive.
    """
    n, h, w = img.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    yy -= (h - 1) / 2
    xx -= (w - 1) / 2
    s = np.full(n, s0)
    xc, yc = np.zeros(n), np.zeros(n)
    ok = np.ones(n, bool)
    for _ in range(iterations):
        dx, dy = xx[None] - xc[:, None, None], yy[None] - yc[:, None, None]
        wgt = np.exp(-(dx**2 + dy**2) / (2 * s[:, None, None] ** 2))
        f = img * wgt
        tot = f.sum(axis=(1, 2))
        ok = tot > 0
        safe = np.where(ok, tot, 1.0)
        xc = np.clip((f * xx).sum(axis=(1, 2)) / safe, -3, 3)
        yc = np.clip((f * yy).sum(axis=(1, 2)) / safe, -3, 3)
        m = (f * (dx**2 + dy**2)).sum(axis=(1, 2)) / (2 * safe)
        s2 = s**2
        sigma2 = np.where(m < 0.95 * s2, m * s2 / np.maximum(s2 - m, 1e-9), 4 * s2)
        s = np.sqrt(np.clip(sigma2, 0.3**2, 5.0**2))
    return np.where(ok, s, np.nan)


def stamp_statistics(stamps: np.ndarray, *, pixel_scale: float, chunk: int = 512) -> pd.DataFrame:
    """Per-candidate statistics of (N, 3, S, S) sci / ref / diff stamps (see :data:`STAMP_STATISTICS`).

    Args:
        stamps: stamps in the survey's counts (NaN where there are no data); read in chunks, so a
            memory-mapped array is fine.
        pixel_scale: arcsec per pixel (for the FWHM).
        chunk: candidates per chunk.

    Returns:
        One row per candidate: ``<ch>_background`` (sigma-clipped median, 3 sigma, astropy),
        ``<ch>_noise`` (1.4826 MAD about the median), ``<ch>_peak_snr`` (the pixel of the central
        :data:`CENTRE_BOX` box farthest from the background, minus the background, over the noise;
        signed), ``<ch>_nan_fraction``, ``diff_fwhm`` (arcsec, adaptive moments of the difference
        source taken with the sign of its centre), ``ref_sci_noise_ratio`` and ``diff_centre_sign``.
    """
    from astropy.stats import sigma_clipped_stats
    from astropy.utils.exceptions import AstropyUserWarning

    if stamps.ndim != 4 or stamps.shape[1] != len(CHANNELS):
        raise RealismError(f"stamps must be (N, {len(CHANNELS)}, S, S), got {stamps.shape}")
    size = stamps.shape[-1]
    lo, hi = size // 2 - CENTRE_BOX // 2, size // 2 + CENTRE_BOX // 2 + 1
    frames = []
    for start in range(0, len(stamps), chunk):
        x = np.asarray(stamps[start : start + chunk], np.float64)
        cols: dict[str, np.ndarray] = {}
        for c, ch in enumerate(CHANNELS):
            img = x[:, c]
            finite = np.isfinite(img)
            empty = ~finite.any(axis=(1, 2))
            filled = np.where(empty[:, None, None], 0.0, img)  # all-NaN stamps: NaN statistics below
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyUserWarning)  # NaN pixels: expected, skipped
                _, bkg, _ = sigma_clipped_stats(filled, sigma=3.0, maxiters=5, axis=(1, 2))
                med = np.nanmedian(filled, axis=(1, 2))
                noise = _MAD_TO_SIGMA * np.nanmedian(np.abs(filled - med[:, None, None]), axis=(1, 2))
            bkg = np.where(empty, np.nan, np.asarray(bkg, float))
            noise = np.where(empty | (noise <= 0), np.nan, noise)
            box = filled[:, lo:hi, lo:hi] - bkg[:, None, None]
            flat = np.nan_to_num(box, nan=0.0).reshape(len(x), -1)
            peak = flat[np.arange(len(x)), np.abs(flat).argmax(axis=1)]
            cols[f"{ch}_background"] = bkg
            cols[f"{ch}_noise"] = noise
            cols[f"{ch}_peak_snr"] = peak / noise
            cols[f"{ch}_nan_fraction"] = 1.0 - finite.mean(axis=(1, 2))
            if ch == "diff":
                sign = np.where(peak < 0, -1.0, 1.0)
                # the source is at the centre: a 25 px box holds a window up to FWHM ~ 12 px
                r0 = max(size // 2 - 12, 0)
                box25 = filled[:, r0 : r0 + 25, r0 : r0 + 25] - bkg[:, None, None]
                src = np.nan_to_num(sign[:, None, None] * box25, nan=0.0)
                cols["diff_fwhm"] = _GAUSS_FWHM * _adaptive_sigma(src) * pixel_scale
                cols["diff_centre_sign"] = np.where(np.isfinite(bkg), sign, np.nan)
        cols["ref_sci_noise_ratio"] = cols["ref_noise"] / cols["sci_noise"]
        frames.append(pd.DataFrame(cols)[list(STAMP_STATISTICS)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(STAMP_STATISTICS))


def compare_columns(sim: pd.DataFrame, real: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per column: sim and real median, p10, p90, the simulated p1/p99, the share of real
    values outside the simulated 1-99% range, the flag "real median outside the simulated 10-90%
    range", and the missing (NaN) fraction on each side; ``missing_in`` names a side where the
    column is entirely missing (those rows carry no percentiles)."""
    rows = []
    for col in columns:
        a = sim[col].to_numpy(float) if col in sim else np.full(len(sim), np.nan)
        b = real[col].to_numpy(float) if col in real else np.full(len(real), np.nan)
        fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
        missing_in = {(0, 0): "both", (0, 1): "sim", (1, 0): "real"}.get((len(fa) > 0, len(fb) > 0), "")
        row: dict = {
            "statistic": col,
            "sim_missing": float(1 - len(fa) / max(len(a), 1)),
            "real_missing": float(1 - len(fb) / max(len(b), 1)),
            "missing_in": missing_in,
        }
        if len(fa) and len(fb):
            p1, p10, p50, p90, p99 = np.percentile(fa, [1, 10, 50, 90, 99])
            r10, r50, r90 = np.percentile(fb, [10, 50, 90])
            row |= {
                "sim_median": p50, "sim_p10": p10, "sim_p90": p90, "sim_p1": p1, "sim_p99": p99,
                "real_median": r50, "real_p10": r10, "real_p90": r90,
                "real_outside_sim_1_99": float(((fb < p1) | (fb > p99)).mean()),
                "flag_median_outside_sim_10_90": bool(r50 < p10 or r50 > p90),
            }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class TwoSampleResult:
    """A classifier two-sample test: cross-validated AUC (0.5: indistinguishable), per fold, the rows
    used per side, and the permutation importance (AUC lost) of each column group."""

    auc: float
    auc_folds: list[float]
    n_per_side: int
    importance: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "auc": self.auc,
            "auc_folds": self.auc_folds,
            "n_per_side": self.n_per_side,
            "importance": dict(sorted(self.importance.items(), key=lambda kv: -kv[1])),
        }


def classifier_two_sample_test(
    a: np.ndarray | pd.DataFrame,
    b: np.ndarray | pd.DataFrame,
    *,
    groups: dict[str, list[int]] | None = None,
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    max_iter: int = 100,
) -> TwoSampleResult:
    """Cross-validated classifier two-sample test of rows ``a`` against rows ``b``.

    The larger sample is subsampled (seeded) to the size of the smaller; a HistGradientBoosting
    classifier (NaN handled natively) is trained on ``folds - 1`` folds (fewer folds when a side has
    fewer than ``2 * folds`` rows) and scored on the held-out
    one (stratified folds); the AUC is the mean over folds. The importance of a group of columns is
    the held-out AUC minus the AUC with the group's columns shuffled together across rows (mean of
    ``repeats`` shuffles and of the folds).

    Args:
        a, b: (N, F) and (M, F) rows with the same columns (DataFrames: matched by name).
        groups: name -> column indices shuffled together (default: each column by itself, named by
            the DataFrame's columns or ``x<j>``).
    """
    names = None
    if isinstance(a, pd.DataFrame):
        names = list(a.columns)
        b = pd.DataFrame(b)[names]
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    if xa.shape[1] != xb.shape[1]:
        raise RealismError(f"the samples have {xa.shape[1]} and {xb.shape[1]} columns")
    rng = np.random.default_rng(seed)
    n = min(len(xa), len(xb))
    if n < 4:
        raise RealismError(f"the two-sample test needs at least 4 rows per side, got {n}")
    folds = max(2, min(folds, n // 2))  # small samples: fewer folds, each with both sides
    xa, xb = xa[rng.permutation(len(xa))[:n]], xb[rng.permutation(len(xb))[:n]]
    x = np.concatenate([xa, xb])
    y = np.r_[np.zeros(n, int), np.ones(n, int)]
    if groups is None:
        names = names or [f"x{j}" for j in range(x.shape[1])]
        groups = {name: [j] for j, name in enumerate(names)}
    aucs: list[float] = []
    drops: dict[str, list[float]] = {g: [] for g in groups}
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)
    # one OpenMP thread: the models are small, and spinning threads on a shared machine cost more
    with threadpool_limits(1, user_api="openmp"):
        for k, (train, test) in enumerate(splits):
            clf = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed + k)
            clf.fit(x[train], y[train])
            xt, yt = x[test], y[test]
            auc = roc_auc_score(yt, clf.predict_proba(xt)[:, 1])
            aucs.append(float(auc))
            # every shuffled copy of the held-out fold scored in one call (per-call overhead dominates)
            copies = []
            for cols in groups.values():
                for _ in range(repeats):
                    shuffled = xt.copy()
                    shuffled[:, cols] = xt[rng.permutation(len(xt))][:, cols]
                    copies.append(shuffled)
            p = clf.predict_proba(np.concatenate(copies))[:, 1].reshape(len(groups), repeats, len(xt))
            for g, pg in zip(groups, p, strict=True):
                drops[g].extend(auc - roc_auc_score(yt, pr) for pr in pg)
    return TwoSampleResult(float(np.mean(aucs)), aucs, n, {g: float(np.mean(v)) for g, v in drops.items()})


def stamp_pixels(stamps: np.ndarray, *, centre: int = 21, block: int = 3, outer_block: int = 7) -> tuple:
    """Noise-normalised stamps (per stamp and channel: minus the median, over 1.4826 MAD, as the
    model's ``noise`` normalisation; NaN -> 0, clipped at +-50 sigma), block-averaged: the whole stamp
    in ``outer_block`` blocks and the central ``centre`` px in ``block`` blocks, per channel; and the
    column groups (channel x scale) of the result."""
    x = np.asarray(stamps, np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stamps: zeros below
        med = np.nanmedian(x, axis=(2, 3), keepdims=True)
        mad = _MAD_TO_SIGMA * np.nanmedian(np.abs(x - med), axis=(2, 3), keepdims=True)
        x = (x - med) / np.where(mad > 0, mad, 1.0)
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), -50.0, 50.0)
    n, c, s, _ = x.shape

    def blocks(img: np.ndarray, b: int) -> np.ndarray:
        m = img.shape[-1] // b * b
        img = img[..., :m, :m].reshape(n, c, m // b, b, m // b, b)
        return img.mean(axis=(3, 5)).reshape(n, c, -1)

    lo = (s - centre) // 2
    outer, inner = blocks(x, outer_block), blocks(x[..., lo : lo + centre, lo : lo + centre], block)
    columns, groups, j = [], {}, 0
    for ci, ch in enumerate(CHANNELS[:c]):
        for name, part in (("whole", outer), ("centre", inner)):
            columns.append(part[:, ci])
            groups[f"{ch} ({name})"] = list(range(j, j + part.shape[-1]))
            j += part.shape[-1]
    return np.concatenate(columns, axis=1), groups


@dataclass
class Sample:
    """Candidates of one side: the table (features as columns), stamps, and what they are."""

    candidates: pd.DataFrame
    stamps: np.ndarray
    pixel_scale: float
    described: str


def load_sim(dataset: str | Path, *, max_rows: int = 5000, seed: int = 0) -> tuple[Sample, list[str], dict]:
    """The simulated candidates of a dataset directory that pass the alert cut (:data:`ALERT_SNR`),
    subsampled (seeded) to ``max_rows``; its numeric features; and counts of the selection."""
    from hybrid.data.dataset import read_dataset

    ds = read_dataset(dataset)
    table = ds.candidates
    if "snr_psf" not in table:
        raise RealismError(f"{ds.path}/candidates.parquet: no column 'snr_psf' for the alert cut")
    keep = np.flatnonzero(np.abs(table["snr_psf"].to_numpy(float)) >= ALERT_SNR)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(keep)[:max_rows])
    cand = table.iloc[chosen].reset_index(drop=True)
    features = [f for f in ds.meta.get("features", {}) if f in cand and cand[f].dtype.kind in "fiub"]
    counts = {
        "n_candidates": len(table),
        "n_pass_alert_cut": len(keep),
        "n_used": len(chosen),
    }
    if "label_real" in cand:
        counts["real_share_of_used"] = float(np.nanmean(cand["label_real"].to_numpy(float)))
    if "isdiffpos" in cand:
        counts["negative_share_of_used"] = float((cand["isdiffpos"].to_numpy(float) == 0).mean())
    scale = ds.meta.get("pixel_scale")
    if scale is None:
        raise RealismError(f"{ds.path}/meta.json: no field 'pixel_scale'")
    stamps = np.asarray(ds.stamps[chosen], np.float32)
    return Sample(cand, stamps, float(scale), f"`{ds.path}` ({ds.meta.get('survey', '?')})"), features, counts


def load_real(
    inputs: list[str | Path], *, kind: str | None = None, stamp_size: int = 63
) -> tuple[Sample, list[str], dict]:
    """The alerts of ``inputs`` (every reader's format) with stamps of ``stamp_size`` (centred cuts of
    the survey's cutouts, to match the simulated stamps), their features and counts."""
    from hybrid.data.readers import framework_features, read_alerts
    from hybrid.data.readers.rubin import RUBIN_PIXEL_SCALE
    from hybrid.data.readers.ztf import ZTF_PIXEL_SCALE

    batch = read_alerts(inputs, kind=kind, stamp_size=stamp_size)
    if len(batch) == 0:
        raise RealismError(f"no usable alerts in {[str(p) for p in inputs]}")
    surveys = sorted(set(batch.candidates["survey"]))
    scales = {"ztf": ZTF_PIXEL_SCALE, "rubin": RUBIN_PIXEL_SCALE}
    if len(surveys) != 1 or surveys[0] not in scales:
        raise RealismError(f"real inputs must be alerts of one of {sorted(scales)}, got {surveys}")
    counts = {
        "n_alerts": len(batch),
        "n_rejected": len(batch.rejected),
        "by_file": {Path(str(k)).name: int(v) for k, v in batch.candidates["source"].value_counts().items()},
        "negative_share": float((batch.candidates["isdiffpos"].to_numpy(float) == 0).mean()),
    }
    files = ", ".join(f"`{k}` ({v})" for k, v in counts["by_file"].items())
    sample = Sample(
        batch.candidates, batch.stamps, scales[surveys[0]], f"{len(batch)} {surveys[0]} alerts: {files}"
    )
    return sample, list(framework_features()), counts


def realism(
    sim_dataset: str | Path,
    real_inputs: list[str | Path],
    *,
    kind: str | None = None,
    max_sim: int = 5000,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Compare a simulated dataset with real alerts (see the module doc).

    Returns:
        (the result as a JSON-ready dict, the per-candidate statistics and features of the simulated
        and of the real side, each with the stamp statistics first).
    """
    sim, sim_features, sim_counts = load_sim(sim_dataset, max_rows=max_sim, seed=seed)
    real, real_features, real_counts = load_real(real_inputs, kind=kind, stamp_size=sim.stamps.shape[-1])
    stats_sim = stamp_statistics(sim.stamps, pixel_scale=sim.pixel_scale)
    stats_real = stamp_statistics(real.stamps, pixel_scale=real.pixel_scale)
    features = list(dict.fromkeys([*sim_features, *real_features]))
    a = pd.concat([stats_sim, sim.candidates.reindex(columns=features).astype(float)], axis=1)
    b = pd.concat([stats_real, real.candidates.reindex(columns=features).astype(float)], axis=1)
    table = compare_columns(a, b, [*STAMP_STATISTICS, *features])
    table.insert(1, "kind", ["stamp"] * len(STAMP_STATISTICS) + ["feature"] * len(features))
    present = table.loc[table["missing_in"] == "", "statistic"].tolist()
    used_features = [f for f in present if f in features]
    c2st = classifier_two_sample_test(a[present], b[present], seed=seed)
    c2st_stats = classifier_two_sample_test(a[list(STAMP_STATISTICS)], b[list(STAMP_STATISTICS)], seed=seed)
    c2st_feats = classifier_two_sample_test(a[used_features], b[used_features], seed=seed)
    pa, groups = stamp_pixels(sim.stamps)
    pb, _ = stamp_pixels(real.stamps)
    c2st_stamps = classifier_two_sample_test(pa, pb, groups=groups, seed=seed)
    flags = table.reindex(columns=["flag_median_outside_sim_10_90"]).iloc[:, 0]
    flagged = table[flags.fillna(False).astype(bool)]
    result = {
        "sim": {"described": sim.described, **sim_counts},
        "real": {"described": real.described, **real_counts},
        "selection": f"simulated: |snr_psf| >= {ALERT_SNR:g} (ZTF's alert cut, both signs, real and "
        "bogus together); real: every alert",
        "c2st_auc": c2st.auc,
        "c2st_stamps_auc": c2st_stamps.auc,
        "c2st_stamp_statistics_only_auc": c2st_stats.auc,
        "c2st_features_only_auc": c2st_feats.auc,
        "c2st": c2st.to_dict(),
        "c2st_stamps": c2st_stamps.to_dict(),
        "c2st_stamp_statistics_only": c2st_stats.to_dict(),
        "c2st_features_only": c2st_feats.to_dict(),
        "columns_in_c2st": present,
        "missing_in_real": table.loc[table["missing_in"] == "real", "statistic"].tolist(),
        "missing_in_sim": table.loc[table["missing_in"] == "sim", "statistic"].tolist(),
        "missing_in_both": table.loc[table["missing_in"] == "both", "statistic"].tolist(),
        "flagged": flagged["statistic"].tolist(),
        "units": {**STAMP_STATISTICS, **_feature_units(features)},
        "table": json.loads(table.to_json(orient="records")),
    }
    return result, a, b


def _feature_units(features: list[str]) -> dict[str, str]:
    from hybrid.data.readers import framework_features

    units = framework_features()
    return {f: units.get(f, "") for f in features}


def plot_histograms(sim: pd.DataFrame, real: pd.DataFrame, columns: list[str], path: str | Path) -> Path:
    """A grid of histograms, simulated against real, one panel per column (log-spaced bins for
    positive columns spanning more than two decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = 4
    nrow = max(1, -(-len(columns) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax, col in zip(axes.ravel(), columns, strict=False):
        a = sim[col].to_numpy(float)
        b = real[col].to_numpy(float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        both = np.concatenate([a, b])
        if len(both) == 0:
            ax.set_title(f"{col}: all missing", fontsize=8)
            continue
        lo, hi = np.percentile(both, [0.5, 99.5])
        log = lo > 0 and hi / lo > 100
        bins = np.geomspace(lo, hi, 31) if log else np.linspace(lo, hi if hi > lo else lo + 1, 31)
        for v, label, color in ((a, "sim", "tab:blue"), (b, "real", "tab:orange")):
            if len(v):
                ax.hist(
                    np.clip(v, bins[0], bins[-1]),
                    bins=bins,
                    density=True,
                    histtype="step",
                    color=color,
                    label=label,
                )
        if log:
            ax.set_xscale("log")
        ax.set_title(col, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(columns) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    from hybrid.evaluation.evaluate import save_figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def write_realism_report(
    sim_dataset: str | Path,
    real_inputs: list[str | Path],
    out: str | Path = "reports/realism_ztf",
    *,
    kind: str | None = None,
    max_sim: int = 5000,
    seed: int = 0,
) -> Path:
    """Run :func:`realism` and write ``<out>.md``, ``<out>.json``, ``<out>_stamps.png`` and
    ``<out>_features.png`` (histograms of the flagged and the most important features)."""
    result, a, b = realism(sim_dataset, real_inputs, kind=kind, max_sim=max_sim, seed=seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamps_png = plot_histograms(a, b, list(STAMP_STATISTICS), out.with_name(out.name + "_stamps.png"))
    shown = [f for f in result["c2st"]["importance"] if f not in STAMP_STATISTICS][:8]
    shown += [f for f in result["flagged"] if f not in STAMP_STATISTICS and f not in shown]
    features_png = plot_histograms(a, b, shown, out.with_name(out.name + "_features.png"))
    result["plots"] = [stamps_png.name, features_png.name]
    out.with_name(out.name + ".json").write_text(json.dumps(result, indent=2))
    md = out.with_name(out.name + ".md")
    md.write_text(realism_markdown(result))
    return md


def _f(x: object, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    if isinstance(x, bool):
        return "**yes**" if x else ""
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3e}"
    return str(x)


def realism_markdown(r: dict) -> str:
    """The report of :func:`write_realism_report`."""
    sim, real = r["sim"], r["real"]
    top = list(r["c2st"]["importance"].items())[:10]
    top_stamps = list(r["c2st_stamps"]["importance"].items())
    lines = [
        "# Realism: simulated candidates against real alerts",
        "",
        f"Written by `hybrid realism`. Simulated: {sim['described']}, {sim['n_candidates']} candidates, "
        f"{sim['n_pass_alert_cut']} pass the alert cut, {sim['n_used']} used (seeded subsample)"
        + (f", {sim['real_share_of_used']:.1%} of them real" if "real_share_of_used" in sim else "")
        + (f", {sim['negative_share_of_used']:.1%} negative" if "negative_share_of_used" in sim else "")
        + f". Real: {real['described']}; {real['negative_share']:.1%} negative detections.",
        "",
        f"Selection: {r['selection']}. ZTF sends an alert for every 5-sigma difference-image detection "
        "(Masci et al. 2019), so the simulated candidates that would have been alerted, bogus included, "
        "are the population to compare with the alert stream.",
        "",
        "## Classifier two-sample tests (5-fold cross-validated AUC; 0.5: indistinguishable)",
        "",
        "| test | AUC | rows per side |",
        "|---|---|---|",
        f"| stamp statistics + features (`c2st_auc`) | {r['c2st_auc']:.3f} | {r['c2st']['n_per_side']} |",
        f"| stamp statistics only | {r['c2st_stamp_statistics_only_auc']:.3f} | "
        f"{r['c2st_stamp_statistics_only']['n_per_side']} |",
        f"| features only | {r['c2st_features_only_auc']:.3f} | {r['c2st_features_only']['n_per_side']} |",
        f"| stamps: noise-normalised, block-averaged pixels (`c2st_stamps_auc`) | {r['c2st_stamps_auc']:.3f} "
        f"| {r['c2st_stamps']['n_per_side']} |",
        "",
        "What gives the simulation away (permutation importance: held-out AUC lost when the column is "
        "shuffled), statistics + features: "
        + ", ".join(f"`{k}` {v:.3f}" for k, v in top)
        + ". Stamps, by channel and scale: "
        + ", ".join(f"{k} {v:.3f}" for k, v in top_stamps)
        + ".",
        "",
        "## Missing features",
        "",
        f"- Present in the simulation, always missing on the real alerts ({len(r['missing_in_real'])}): "
        + (", ".join(f"`{f}`" for f in r["missing_in_real"]) or "none")
        + ". A model trained with them sees a missing-value pattern on real alerts that it never saw "
        "in training; they are left out of the two-sample tests.",
        f"- Present on the real alerts, missing in the simulation ({len(r['missing_in_sim'])}): "
        + (", ".join(f"`{f}`" for f in r["missing_in_sim"]) or "none")
        + ".",
        f"- Missing in both: {', '.join(f'`{f}`' for f in r['missing_in_both']) or 'none'}.",
        "",
        "## Per statistic",
        "",
        "Flag: the real median lies outside the simulated 10-90% range. 'Real outside' is the share of "
        "real values outside the simulated 1-99% range.",
        "",
        "| statistic | unit | sim median | sim p10 | sim p90 | real median | real p10 | real p90 | "
        "real outside sim 1-99% | flag | missing sim / real |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["table"]:
        if row["missing_in"]:
            continue
        lines.append(
            f"| `{row['statistic']}` | {r['units'].get(row['statistic'], '')} | {_f(row['sim_median'])} | "
            f"{_f(row['sim_p10'])} | {_f(row['sim_p90'])} | {_f(row['real_median'])} | "
            f"{_f(row['real_p10'])} | {_f(row['real_p90'])} | {row['real_outside_sim_1_99']:.1%} | "
            f"{_f(row['flag_median_outside_sim_10_90'])} | "
            f"{row['sim_missing']:.0%} / {row['real_missing']:.0%} |"
        )
    lines += ["", *(f"![{p}]({p})" for p in r.get("plots", [])), ""]
    return "\n".join(lines)
