"""Models: registries of image encoders, tabular encoders and fusions, and the HybridModel."""

from hybrid.models.encoders import IMAGE_ENCODERS, TABULAR_ENCODERS
from hybrid.models.fusion import FUSIONS
from hybrid.models.hybrid_model import HybridModel
from hybrid.models.preprocessing import FeaturePreprocessor, StampNormalizer

__all__ = [
    "FUSIONS",
    "IMAGE_ENCODERS",
    "TABULAR_ENCODERS",
    "FeaturePreprocessor",
    "HybridModel",
    "StampNormalizer",
]
