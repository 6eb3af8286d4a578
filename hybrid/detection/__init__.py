"""Detection on difference images, cutouts, and per-candidate measurements."""

from hybrid.detection.detect import Detector, subtract_background
from hybrid.detection.features import FEATURE_UNITS, measure_stamps, nearest_source_features
from hybrid.detection.stamps import cut_stamps, edge_fraction

__all__ = [
    "FEATURE_UNITS",
    "Detector",
    "cut_stamps",
    "edge_fraction",
    "measure_stamps",
    "nearest_source_features",
    "subtract_background",
]
