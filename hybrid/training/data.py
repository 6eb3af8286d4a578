"""The training data: splits of a dataset directory held in memory as tensors, served in batches.

Stamps are kept raw (ADU, NaN at edges); normalisation happens inside the model so that training and
serving see the same code. Batches are cut from a per-epoch permutation seeded by (seed, epoch), so a
run resumed at an epoch boundary sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from hybrid.data.dataset import DatasetError, ModelInputs, select_inputs
from hybrid.taxonomy import TRANSIENT_TYPES


class SplitTensors:
    """One split's stamps, features and labels as tensors, with the rows they came from.

    Rows without labels (real alerts: no ``label_real`` / ``label_type`` column) get ``label_real``
    NaN and ``label_type`` -1, so nothing can train on them by accident.
    """

    def __init__(
        self, stamps: np.ndarray, table: pd.DataFrame, features: list[str], channels: list[int]
    ) -> None:
        self.rows = table.index.to_numpy()
        self.table = table.reset_index(drop=True)
        # rows are ascending (a boolean selection), which is the fast order to read a memory map in
        if channels:
            self.image = torch.from_numpy(np.ascontiguousarray(stamps[self.rows][:, channels], np.float32))
        else:  # no stamp channels (catalog-only training with train.channels=[]): nothing to read
            self.image = torch.zeros((len(self.rows), 0, *stamps.shape[2:]), dtype=torch.float32)
        self.features = torch.tensor(table[features].to_numpy(np.float32))
        n = len(table)
        labelled = "label_real" in table.columns and "label_type" in table.columns
        real = table["label_real"].to_numpy(np.float32) if labelled else np.full(n, np.nan, np.float32)
        kind = (
            table["label_type"].map(TRANSIENT_TYPES.index).to_numpy(np.int64) if labelled else np.full(n, -1)
        )
        self.label_real, self.label_type = torch.tensor(real), torch.tensor(kind)

    @classmethod
    def from_inputs(cls, inputs: ModelInputs, table: pd.DataFrame | None = None) -> SplitTensors:
        """The selected rows of :func:`hybrid.data.dataset.select_inputs` (or ``table``, a subset of
        its rows) as tensors."""
        return cls(
            inputs.dataset.stamps,
            inputs.table if table is None else table,
            inputs.features,
            inputs.channel_index,
        )

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def normalize_stamps(self, normalizer: torch.nn.Module, chunk: int = 4096) -> None:
        """Replace the raw stamps by ``normalizer(stamps)``, once, chunk by chunk."""
        self.image = torch.cat([normalizer(self.image[i : i + chunk]) for i in range(0, len(self), chunk)])

    def subset(self, index: np.ndarray | torch.Tensor) -> SplitTensors:
        """The rows ``index`` of this split (a copy sharing no tensors with it)."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        out = copy.copy(self)
        out.rows = self.rows[index.numpy()]
        out.table = self.table.iloc[index.numpy()].reset_index(drop=True)
        out.image, out.features = self.image[index], self.features[index]
        out.label_real, out.label_type = self.label_real[index], self.label_type[index]
        return out

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "image": self.image[index],
            "features": self.features[index],
            "label_real": self.label_real[index],
            "label_type": self.label_type[index],
            "index": index,
        }


class EpochBatches(Dataset):
    """Map-style dataset whose items are whole batches (no per-sample Python overhead)."""

    def __init__(self, data: SplitTensors, batch_size: int, *, shuffle: bool, seed: int = 0) -> None:
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self.order = torch.randperm(n, generator=g)
        else:
            self.order = torch.arange(n)

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.data.batch(self.order[i * self.batch_size : (i + 1) * self.batch_size])


class CandidateDataModule(L.LightningDataModule):
    """Train / val / test splits (by object) of a dataset directory.

    Args:
        root: dataset directory.
        features: catalog feature columns (default: all features in meta.json); ``[]`` for none.
        channels: stamp channels by name (default: all).
        batch_size: samples per batch.
        label_sources: keep only rows with these label sources in training (all rows in evaluation
            are labelled by truth where available).
        seed: seeds the per-epoch shuffles.
        relabel: ``relabel(table, feature_names) -> table``, applied to the candidate table (index:
            dataset rows) before the splits are cut: label-noise injection and cleaning
            (:class:`hybrid.noise.LabelPipeline`); it may change labels and drop rows.
        max_train_rows: train on a random subset of at most this many training rows (drawn by
            ``seed``, before ``relabel``): learning curves. None for all.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        features: list[str] | None = None,
        channels: list[str] | None = None,
        batch_size: int = 256,
        label_sources: list[str] | None = None,
        seed: int = 0,
        relabel: Callable[[pd.DataFrame, list[str]], pd.DataFrame] | None = None,
        max_train_rows: int | None = None,
    ) -> None:
        super().__init__()
        inputs = select_inputs(root, features=features, channels=channels)
        self.root = Path(root)
        self.meta = inputs.dataset.meta
        self.feature_names, self.channel_names = inputs.features, inputs.channels
        table = inputs.table
        if label_sources is not None:
            table = table[(table["split"] != "train") | table["label_source"].isin(label_sources)]
        train_rows = np.flatnonzero((table["split"] == "train").to_numpy())
        if max_train_rows is not None and train_rows.size > max_train_rows:
            drop = np.random.default_rng([seed, 0x5B5E7]).permutation(train_rows)[max_train_rows:]
            table = table.drop(index=table.index[drop])
        if relabel is not None:
            table = relabel(table, list(self.meta["features"]))
        train_mask = (table["split"] == "train").to_numpy()
        self.splits = {
            name: SplitTensors.from_inputs(inputs, table[mask])
            for name, mask in (
                ("train", train_mask),
                ("val", (table["split"] == "val").to_numpy()),
                ("test", (table["split"] == "test").to_numpy()),
            )
        }
        for name, split in self.splits.items():
            if len(split) == 0:
                raise DatasetError(f"{self.root}: the {name} split is empty")
        self.batch_size = batch_size
        self.train_batches = EpochBatches(self.splits["train"], batch_size, shuffle=True, seed=seed)

    def use_train(self, split: SplitTensors) -> None:
        """Train on ``split`` from now on (a labelled subset of the pool, in active learning)."""
        self.splits["train"] = split
        self.train_batches = EpochBatches(split, self.batch_size, shuffle=True, seed=self.train_batches.seed)

    @property
    def in_chans(self) -> int:
        return len(self.channel_names)

    def _loader(self, batches: Dataset) -> DataLoader:
        # an own generator: creating an iterator would otherwise draw its base seed from torch's
        # global generator, at a moment that differs between a resumed and an uninterrupted run
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0, generator=torch.Generator())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_batches)

    def val_dataloader(self) -> DataLoader:
        return self._loader(EpochBatches(self.splits["val"], 2 * self.batch_size, shuffle=False))

    def test_dataloader(self) -> DataLoader:
        return self._loader(EpochBatches(self.splits["test"], 2 * self.batch_size, shuffle=False))

    def class_weights(self) -> tuple[float, torch.Tensor]:
        """Positive weight of the real-bogus loss (n_bogus / n_real) and balanced type weights."""
        train = self.splits["train"]
        n_real = float(train.label_real.sum())
        pos_weight = (len(train) - n_real) / max(n_real, 1.0)
        counts = torch.bincount(train.label_type, minlength=len(TRANSIENT_TYPES)).float()
        weights = torch.where(counts > 0, counts.sum() / (len(TRANSIENT_TYPES) * counts.clamp_min(1)), 0.0)
        return pos_weight, weights
