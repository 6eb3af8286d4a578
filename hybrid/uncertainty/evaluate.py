"""How good are the probabilities and the uncertainties of a stochastic predictor?

* calibration and sharpness of the real-bogus probability: NLL, Brier score, ECE (Guo et al. 2017),
  ROC AUC;
* how well each uncertainty measure flags the predictions that are wrong at the threshold: the AUROC of
  predictive entropy, mutual information (epistemic), expected entropy (aleatoric) and the member
  standard deviation against the error indicator (Hendrycks & Gimpel 2017; Ovadia et al. 2019, NeurIPS,
  evaluate the same quantities under dataset shift).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from hybrid.evaluation.metrics import (
    brier_score,
    error_detection_auroc,
    expected_calibration_error,
    negative_log_likelihood,
)
from hybrid.uncertainty.predictive import Predictive

#: uncertainty measures whose error-detection AUROC is reported
MEASURES = ("entropy", "mutual_info", "expected_entropy", "std")


def uncertainty_measures(pred: Predictive) -> dict[str, np.ndarray]:
    """Per-candidate uncertainties of a binary predictive (N,) by name."""
    return {
        "entropy": pred.entropy,
        "mutual_info": pred.mutual_info,
        "expected_entropy": pred.expected_entropy,
        "std": pred.positive_std(),
    }


def uncertainty_metrics(y: np.ndarray, pred: Predictive, *, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of a binary predictive against true labels ``y`` (N,)."""
    y = np.asarray(y, bool)
    p = pred.positive()
    wrong = (p >= threshold) != y
    out = {
        "n": len(y),
        "auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "nll": negative_log_likelihood(y, p),
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(y, p),
        "error_rate": float(wrong.mean()),
    }
    for name, u in uncertainty_measures(pred).items():
        out[f"auroc_err_{name}"] = error_detection_auroc(wrong, u)
        out[f"mean_{name}"] = float(np.mean(u))
    return out
