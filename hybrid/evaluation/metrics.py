"""The metrics real-bogus papers report.

* ROC AUC, with a percentile bootstrap confidence interval (Efron & Tibshirani 1993, "An
  Introduction to the Bootstrap", ch. 13) over resampled candidates;
* false-negative rate at 1% false-positive rate, and false-positive rate at 1% false-negative rate
  (the operating points of Brink et al. 2013, MNRAS 435, 1047; Duev et al. 2019; Killestein et al. 2021);
* missed-detection rate and false-positive rate at a fixed score threshold (0.5 by default);
* expected calibration error (Guo et al. 2017): the bin-size-weighted mean gap between confidence
  and accuracy over equal-width probability bins;
* negative log-likelihood and Brier score (Brier 1950), the proper scoring rules of probabilistic
  forecasts, and the AUROC with which an uncertainty separates wrong from right predictions
  (Hendrycks & Gimpel 2017, ICLR);
* completeness (recall of real candidates at the threshold) against magnitude and host offset;
* per-class confusion matrix and macro-F1 of the transient type.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score, roc_curve


def rate_at(y: np.ndarray, score: np.ndarray, *, fpr: float | None = None, fnr: float | None = None) -> float:
    """FNR at the largest threshold whose FPR is at most ``fpr``, or FPR at a FNR of at most ``fnr``."""
    y = np.asarray(y, bool)
    f, t, _ = roc_curve(y, score)
    if fpr is not None:
        return float(1.0 - t[np.searchsorted(f, fpr, side="right") - 1])
    ok = (1.0 - t) <= fnr
    return float(f[np.argmax(ok)]) if ok.any() else 1.0


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """ECE of binary probabilities over ``bins`` equal-width bins."""
    y, prob = np.asarray(y, float), np.asarray(prob, float)
    idx = np.clip((prob * bins).astype(int), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(prob[sel].mean() - y[sel].mean())
    return float(ece)


def negative_log_likelihood(y: np.ndarray, prob: np.ndarray, eps: float = 1e-12) -> float:
    """Mean NLL (nats): of binary labels ``y`` under positive-class probabilities ``prob`` (N,), or of
    class indices ``y`` under class probabilities ``prob`` (N, K)."""
    prob = np.asarray(prob, float)
    if prob.ndim == 2:
        p_true = prob[np.arange(len(prob)), np.asarray(y, int)]
    else:
        y = np.asarray(y, float)
        p_true = np.where(y > 0.5, prob, 1.0 - prob)
    return float(-np.log(np.clip(p_true, eps, 1.0)).mean())


def brier_score(y: np.ndarray, prob: np.ndarray) -> float:
    """Brier score: mean squared error of positive-class probabilities (N,) against binary ``y``, or
    the mean over candidates of the summed squared error of (N, K) probabilities against one-hot ``y``."""
    prob = np.asarray(prob, float)
    if prob.ndim == 2:
        onehot = np.eye(prob.shape[1])[np.asarray(y, int)]
        return float(((prob - onehot) ** 2).sum(axis=1).mean())
    return float(((prob - np.asarray(y, float)) ** 2).mean())


def error_detection_auroc(wrong: np.ndarray, uncertainty: np.ndarray) -> float:
    """ROC AUC of ``uncertainty`` as a detector of wrong predictions (``wrong`` True); 0.5 is no better
    than chance, NaN when every prediction is right (or every one wrong)."""
    wrong = np.asarray(wrong, bool)
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, np.asarray(uncertainty, float)))


def completeness(values: np.ndarray, detected: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    """Fraction of real candidates recovered in bins of ``values`` (with binomial errors)."""
    values = np.asarray(values, float)
    detected = np.asarray(detected, bool)
    rows = []
    for lo, hi in itertools.pairwise(edges):
        sel = (values >= lo) & (values < hi)
        n = int(sel.sum())
        c = float(detected[sel].mean()) if n else np.nan
        err = float(np.sqrt(c * (1 - c) / n)) if n else np.nan
        rows.append({"lo": float(lo), "hi": float(hi), "n": n, "completeness": c, "error": err})
    return pd.DataFrame(rows)


def bootstrap_auc(
    y: np.ndarray, score: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """ROC AUC and its percentile bootstrap confidence interval.

    Candidates are resampled with replacement ``n_boot`` times (seeded); resamples holding a single
    class, which have no AUC, are drawn again.

    Args:
        y: (N,) binary labels; both classes must be present.
        score: (N,) scores (higher: more likely positive).
        n_boot: bootstrap resamples.
        level: coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        seed: seed of the resampling.

    Returns:
        (AUC on all candidates, (lower, upper) bound of the interval).
    """
    y = np.asarray(y, bool)
    score = np.asarray(score, float)
    if y.all() or not y.any():
        raise ValueError(f"bootstrap_auc needs both classes, got {int(y.sum())} positives of {len(y)}")
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    done = 0
    while done < n_boot:
        idx = rng.integers(0, len(y), len(y))
        if y[idx].all() or not y[idx].any():
            continue
        aucs[done] = roc_auc_score(y[idx], score[idx])
        done += 1
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(aucs, [alpha, 1.0 - alpha])
    return float(roc_auc_score(y, score)), (float(lo), float(hi))


def real_bogus_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    y = np.asarray(y, bool)
    score = np.asarray(score, float)
    pred = score >= threshold
    return {
        "auc": float(roc_auc_score(y, score)),
        "fnr_at_1pct_fpr": rate_at(y, score, fpr=0.01),
        "fpr_at_1pct_fnr": rate_at(y, score, fnr=0.01),
        "missed_detection_rate": float((~pred[y]).mean()),
        "false_positive_rate": float(pred[~y].mean()),
        "ece": expected_calibration_error(y, score),
        "threshold": threshold,
    }


def type_metrics(true: np.ndarray, prob: np.ndarray, names: list[str]) -> tuple[dict[str, float], np.ndarray]:
    """Macro-F1 over the classes present, per-class F1, and the confusion matrix (rows: truth)."""
    pred = prob.argmax(axis=1)
    labels = list(range(len(names)))
    present = sorted(set(true.tolist()))
    f1 = f1_score(true, pred, labels=labels, average=None, zero_division=0)
    out = {"type_macro_f1": float(np.mean(f1[present])), "type_accuracy": float((pred == true).mean())}
    out.update({f"type_f1_{names[i]}": float(f1[i]) for i in present})
    return out, confusion_matrix(true, pred, labels=labels)
