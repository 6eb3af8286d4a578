"""Training: the data module, the LightningModule and the `train` task."""

from hybrid.training.data import CandidateDataModule
from hybrid.training.module import HybridModule
from hybrid.training.train import build_model, train

__all__ = ["CandidateDataModule", "HybridModule", "build_model", "train"]
