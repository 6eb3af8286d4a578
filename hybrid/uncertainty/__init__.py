"""Uncertainty of the classifier: MC dropout and deep ensembles behind one sampler contract,
temperature scaling, predictive entropy and mutual information per candidate, and their evaluation
(NLL, Brier, ECE, error-detection AUROC). Active learning builds on it (:mod:`hybrid.active`);
export wraps a sampler into one module with named outputs (:mod:`hybrid.uncertainty.wrappers`)."""

from hybrid.uncertainty.calibration import fit_temperature, fit_type_temperature
from hybrid.uncertainty.ensemble import train_ensemble
from hybrid.uncertainty.evaluate import uncertainty_measures, uncertainty_metrics
from hybrid.uncertainty.predictive import Predictive, entropy
from hybrid.uncertainty.sampling import Ensemble, MCDropout, Samples, sample_logits, sample_split

__all__ = [
    "Ensemble",
    "MCDropout",
    "Predictive",
    "Samples",
    "entropy",
    "fit_temperature",
    "fit_type_temperature",
    "sample_logits",
    "sample_split",
    "train_ensemble",
    "uncertainty_measures",
    "uncertainty_metrics",
]
