"""Dataset directories: building them from a survey, reading them, splitting them, loading them.

``CandidateDataset`` (PyTorch) is imported lazily so that building data does not import torch.
"""

from hybrid.data.dataset import Dataset, DatasetError, read_dataset, write_dataset
from hybrid.data.splits import assign_splits

__all__ = ["CandidateDataset", "Dataset", "DatasetError", "assign_splits", "read_dataset", "write_dataset"]


def __getattr__(name: str):
    if name == "CandidateDataset":
        from hybrid.data.torch_dataset import CandidateDataset

        return CandidateDataset
    raise AttributeError(name)
