"""Training as a library: the data module, the LightningModule, model building, ``fit`` and
``score_split``. The ``train`` task that runs it is :func:`hybrid.tasks.train`."""

from hybrid.training.data import CandidateDataModule
from hybrid.training.module import HybridModule
from hybrid.training.train import build_model, fit, score_split

__all__ = ["CandidateDataModule", "HybridModule", "build_model", "fit", "score_split"]
