"""A PyTorch Dataset over a dataset directory that reads stamps lazily from the memory map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hybrid.data.dataset import STAMPS, select_inputs
from hybrid.taxonomy import TRANSIENT_TYPES


class CandidateDataset(Dataset):
    """Items are dicts: ``image`` (C, H, W) float32 (NaN kept: preprocessing decides), ``features``
    (F,) float32 (NaN for missing), ``label_real`` (float 0/1), ``label_type`` (int index into
    :data:`hybrid.taxonomy.TRANSIENT_TYPES`) and ``index`` (the row in candidates.parquet).

    Args:
        root: dataset directory.
        split: keep only rows of this split (``train``, ``val``, ``test``), or all rows.
        features: feature columns, in order; defaults to every feature listed in meta.json.
        channels: subset of the stored channels by name (e.g. ``["diff"]``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        features: list[str] | None = None,
        channels: list[str] | None = None,
    ) -> None:
        inputs = select_inputs(root, features=features, channels=channels or None, split=split or None)
        self.root = Path(root)
        self.meta = inputs.dataset.meta
        table = inputs.table
        self.rows = table.index.to_numpy()
        self.features, self.channel_index = inputs.features, inputs.channel_index
        self._features = table[self.features].to_numpy(np.float32)
        self._real = table["label_real"].to_numpy(np.float32)
        self._type = table["label_type"].map(TRANSIENT_TYPES.index).to_numpy(np.int64)
        self._stamps: np.ndarray | None = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return self.rows.size

    def _stamp_array(self) -> np.ndarray:
        if self._stamps is None:
            self._stamps = np.load(self.root / STAMPS, mmap_mode="r")
        return self._stamps

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        image = np.asarray(self._stamp_array()[row, self.channel_index], dtype=np.float32)
        return {
            "image": torch.from_numpy(image),
            "features": torch.from_numpy(self._features[i]),
            "label_real": torch.tensor(self._real[i]),
            "label_type": torch.tensor(self._type[i]),
            "index": torch.tensor(row),
        }

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stamps"] = None  # memory maps are reopened in each worker
        return state
