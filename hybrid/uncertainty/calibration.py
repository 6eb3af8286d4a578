"""Temperature scaling (Guo, Pleiss, Sun & Weinberger 2017, ICML, "On Calibration of Modern Neural
Networks"): one scalar T > 0 divides every logit; T is fitted by minimising the negative
log-likelihood on held-out (validation) candidates. The ranking, and so the ROC curve of a single
model, is unchanged; only the confidence moves.

For a sampler (MC dropout, ensemble) or test-time views, T divides the logits of every sample and view
and the NLL is that of the predictive mean, so the fitted T calibrates what is reported.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from hybrid.evaluation.metrics import negative_log_likelihood
from hybrid.uncertainty.sampling import Samples

#: log T is searched in [-LOG_T_BOUND, LOG_T_BOUND]
LOG_T_BOUND = 4.0


def _fit(nll_of_t) -> float:
    res = minimize_scalar(
        lambda log_t: nll_of_t(float(np.exp(log_t))), bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded"
    )
    return float(np.exp(res.x))


def fit_temperature(samples: Samples, y: np.ndarray) -> float:
    """T minimising the real-bogus NLL of ``samples`` against binary labels ``y`` (N,)."""
    y = np.asarray(y, float)
    if samples.rb_logits.shape[-1] != len(y):
        raise ValueError(f"{samples.rb_logits.shape[-1]} candidates but {len(y)} labels")
    return _fit(lambda t: negative_log_likelihood(y, samples.real_bogus(t).positive()))


def fit_type_temperature(samples: Samples, y: np.ndarray) -> float:
    """T minimising the type NLL of ``samples`` against class indices ``y`` (N,)."""
    y = np.asarray(y, int)
    rows = np.arange(len(y))
    return _fit(lambda t: negative_log_likelihood(np.ones(len(y)), samples.types(t).mean[rows, y]))
