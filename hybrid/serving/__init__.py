"""Serving: score alerts with an export bundle (:class:`Predictor`, ``hybrid predict``)."""

from hybrid.serving.predictor import Predictor, PredictSummary

__all__ = ["PredictSummary", "Predictor"]
