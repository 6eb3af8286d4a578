"""Label noise as a pluggable part of training: injection, robust losses, co-teaching, cleaning.

* :mod:`~hybrid.noise.injection` -- corrupt the train/val labels of a built dataset, per row and
  deterministically (``noise`` config group);
* :mod:`~hybrid.noise.losses` -- noise-robust real-bogus losses (``loss`` group);
* :mod:`~hybrid.noise.coteaching` -- co-teaching of two networks (``coteaching`` group);
* :mod:`~hybrid.noise.cleaning` -- confident learning and catalogue cleaning (``cleaning`` group);
* :mod:`~hybrid.noise.labels` -- the load-time step that runs injection and cleaning and records them.

The ``handling`` group names one remedy per option (a loss, a cleaner or co-teaching), the axis of
the label-noise study (experiments/label_noise.yaml).
"""

from hybrid.noise.cleaning import CLEANERS, CatalogCleaning, Cleaner, ConfidentLearning, Flags, apply_flags
from hybrid.noise.injection import LABEL_NOISE, LabelNoise
from hybrid.noise.labels import LabelPipeline, label_pipeline, precision_recall
from hybrid.noise.losses import LOSSES, RealBogusLoss

__all__ = [
    "CLEANERS",
    "LABEL_NOISE",
    "LOSSES",
    "CatalogCleaning",
    "Cleaner",
    "ConfidentLearning",
    "Flags",
    "LabelNoise",
    "LabelPipeline",
    "RealBogusLoss",
    "apply_flags",
    "label_pipeline",
    "precision_recall",
]
