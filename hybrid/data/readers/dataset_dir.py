"""A dataset directory as an input (for scoring simulated or previously converted data).

Ids: ``alert_id`` is the table's own ``alert_id`` when it has one, else the row number; labels and
truth (``label_real``, ``label_type``, ``truth_real``, ``truth_type``, ``split``) are carried along so
that scores can be evaluated against them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hybrid.data.dataset import CANDIDATES, META, STAMPS, is_complete, read_dataset
from hybrid.data.readers.base import (
    READERS,
    AlertBatch,
    AlertReader,
    Chunk,
    ReaderError,
    assemble,
    framework_features,
)
from hybrid.data.readers.cutouts import fit_stamp
from hybrid.detection.candidates import CHANNELS

DATASET_FILES = (CANDIDATES, STAMPS, META)
CARRIED = ("label_real", "label_type", "truth_real", "truth_type", "split")


@dataclass
class DatasetChunk(Chunk):
    path: Path
    table: pd.DataFrame
    stamps: np.ndarray  # (n, C, S, S) rows of this chunk, channels in meta order
    channels: list[str]
    survey: str

    def decode(self, stamp_size: int) -> AlertBatch:
        t = self.table.reset_index(drop=True)
        n = len(t)
        order = [self.channels.index(c) for c in CHANNELS]
        raw = np.asarray(self.stamps[:, order], np.float32)
        if raw.shape[-1] == stamp_size:
            stamps, edge = raw, np.zeros(n)
        else:
            stamps = np.empty((n, len(CHANNELS), stamp_size, stamp_size), np.float32)
            for i in range(n):
                for c in range(len(CHANNELS)):
                    stamps[i, c], _ = fit_stamp(raw[i, c], stamp_size)
            edge = 1.0 - min(raw.shape[-1], stamp_size) ** 2 / stamp_size**2 * np.ones(n)
        rows = t.index.to_numpy() + int(self.table.index[0]) if n else t.index.to_numpy()
        ids = pd.DataFrame(
            {
                "alert_id": t["alert_id"].astype(str) if "alert_id" in t else rows.astype(str),
                "object_id": t["object_id"].astype(str) if "object_id" in t else rows.astype(str),
                "survey": t["survey"].astype(str) if "survey" in t else self.survey,
                "band": t["band"].astype(str) if "band" in t else "",
                "ra": t["ra"] if "ra" in t else np.nan,
                "dec": t["dec"] if "dec" in t else np.nan,
                "mjd": t["mjd"] if "mjd" in t else np.nan,
                "source": str(self.path),
            }
        )
        names = [f for f in framework_features() if f in t and not f.startswith("stamp_")]
        features = pd.DataFrame({f: pd.to_numeric(t[f], errors="coerce").astype(np.float64) for f in names})
        extras = t[[c for c in CARRIED if c in t]]
        batch = assemble(
            ids,
            features,
            stamps,
            np.maximum(edge, t.get("stamp_edge_fraction", 0)),
            {},
            str(self.path),
            extras,
        )
        return batch


@READERS.register("dataset")
class DatasetReader(AlertReader):
    """A dataset directory (candidates.parquet + stamps.npy + meta.json)."""

    def sniff(self, path: Path) -> bool:
        return path.is_dir() and is_complete(path)

    def mismatch(self, path: Path) -> str | None:
        present = [f for f in DATASET_FILES if (path / f).is_file()] if path.is_dir() else []
        if not present:
            return None
        missing = [f for f in DATASET_FILES if f not in present]
        return f"incomplete dataset directory: {', '.join(missing)} missing (has {', '.join(present)})"

    def chunks(self, path: Path, batch_size: int) -> Iterator[Chunk]:
        ds = read_dataset(path)
        channels = ds.meta.get("channels")
        lacking = [c for c in CHANNELS if not isinstance(channels, list) or c not in channels]
        if lacking:
            raise ReaderError(f"{path}/meta.json: field 'channels' = {channels!r} lacks {lacking}")
        if ds.stamps.shape[1] != len(channels):
            raise ReaderError(
                f"{path}: stamps.npy has {ds.stamps.shape[1]} channels, meta.json 'channels' lists "
                f"{len(channels)}"
            )
        survey = str(ds.meta.get("survey", ""))
        for start in range(0, len(ds), batch_size):
            stop = min(start + batch_size, len(ds))
            yield DatasetChunk(path, ds.candidates.iloc[start:stop], ds.stamps[start:stop], channels, survey)
