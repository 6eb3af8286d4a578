"""Cross-survey adapters: one model across GOTO-, ZTF-, ATLAS- and Rubin-like data.

``dataset dir -> adapters -> HybridModel``. Stamp and feature harmonisation to a common frame
(:mod:`~hybrid.adapters.harmonize`, applied to dataset directories by :mod:`~hybrid.adapters.dataset`),
learned adaptation (AdaBN, domain-adversarial training, fine-tuning: :mod:`~hybrid.adapters.learned`)
and the `train` task's adapter stage (:mod:`~hybrid.adapters.stage`, Hydra group ``adapter/``).
"""

from hybrid.adapters.dataset import harmonize_dataset, merge_datasets, survey_dataset
from hybrid.adapters.harmonize import (
    StampHarmonizer,
    harmonize_features,
    homogenize_psf,
    measure_fwhm,
    normalize_noise,
    resample_stamps,
)
from hybrid.adapters.learned import (
    TEST_TIME_ADAPTERS,
    DomainAdversarialModule,
    GradientReversal,
    adapt_batchnorm,
    finetune,
    reverse_gradient,
)
from hybrid.adapters.stage import CrossSurvey, adapt_dataset, adapter_module, cross_survey_metrics

__all__ = [
    "TEST_TIME_ADAPTERS",
    "CrossSurvey",
    "DomainAdversarialModule",
    "GradientReversal",
    "StampHarmonizer",
    "adapt_batchnorm",
    "adapt_dataset",
    "adapter_module",
    "cross_survey_metrics",
    "finetune",
    "harmonize_dataset",
    "harmonize_features",
    "homogenize_psf",
    "measure_fwhm",
    "merge_datasets",
    "normalize_noise",
    "resample_stamps",
    "reverse_gradient",
    "survey_dataset",
]
