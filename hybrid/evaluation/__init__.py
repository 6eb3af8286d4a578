"""Evaluation: the field's real-bogus and type metrics, and their plots."""

from hybrid.evaluation.evaluate import evaluate
from hybrid.evaluation.metrics import (
    bootstrap_auc,
    expected_calibration_error,
    rate_at,
    real_bogus_metrics,
    type_metrics,
)

__all__ = [
    "bootstrap_auc",
    "evaluate",
    "expected_calibration_error",
    "rate_at",
    "real_bogus_metrics",
    "type_metrics",
]
