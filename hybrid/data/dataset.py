"""The dataset directory: the seam between building data and learning from it.

::

    <dataset>/
      candidates.parquet   one row per candidate: ids, survey, band, ra, dec, mjd, labels and their
                           source, truth, features (units in meta.json), split
      stamps.npy           float32 (N, C, H, W), channels in meta["channels"], read memory-mapped
      meta.json            schema version, channels, stamp size, pixel scale, features with units,
                           label vocabulary, counts, provenance (resolved config, git sha, versions)

Directories are written atomically: everything goes to a temporary sibling directory that is renamed
into place, so a reader never sees a half-written dataset and a killed writer leaves nothing behind
but a temporary directory that the next write removes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1
CANDIDATES = "candidates.parquet"
STAMPS = "stamps.npy"
META = "meta.json"


class DatasetError(ValueError):
    """A dataset directory that is missing, incomplete or inconsistent; the message names the file."""


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_dataset(path: str | Path, candidates: pd.DataFrame, stamps: np.ndarray, meta: dict) -> Path:
    """Write a dataset directory atomically (replacing an existing one at ``path``)."""
    return write_dataset_streaming(path, [(candidates, stamps)], meta)


def write_dataset_streaming(
    path: str | Path,
    parts: Iterable[tuple[pd.DataFrame, np.ndarray]],
    meta: dict,
    *,
    total: int | None = None,
) -> Path:
    """Write a dataset from (candidates, stamps) parts without holding all stamps in memory.

    ``parts`` may be a generator (for instance over shards); with ``total`` unknown the parts are
    read twice, so pass a list or give ``total`` (rows) and the stamp shape via the first part.
    """
    path = Path(path)
    tmp = _tmp_sibling(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tables = []
    out = None
    offset = 0
    parts = list(parts) if total is None else parts
    if total is None:
        total = sum(len(t) for t, _ in parts)
    for table, stamps in parts:
        if len(table) != len(stamps):
            raise DatasetError(f"{path}: {len(table)} candidate rows but {len(stamps)} stamps")
        if out is None:
            out = np.lib.format.open_memmap(
                tmp / STAMPS, mode="w+", dtype=np.float32, shape=(total, *stamps.shape[1:])
            )
        out[offset : offset + len(stamps)] = stamps
        offset += len(stamps)
        tables.append(table)
    if out is None:
        raise DatasetError(f"{path}: nothing to write")
    if offset != total:
        raise DatasetError(f"{path}: expected {total} rows, got {offset}")
    out.flush()
    del out
    candidates = pd.concat(tables, ignore_index=True)
    candidates.to_parquet(tmp / CANDIDATES, index=False)
    meta = {"schema_version": SCHEMA_VERSION, **meta, "n_candidates": len(candidates)}
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return replace_directory(tmp, path)


def replace_directory(tmp: Path, path: Path) -> Path:
    """Move the finished directory ``tmp`` to ``path``, replacing any directory there (renames only)."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old)
    else:
        tmp.rename(path)
    return path


@dataclass
class Dataset:
    """A dataset directory opened for reading; stamps are memory-mapped, not loaded."""

    path: Path
    candidates: pd.DataFrame
    stamps: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.candidates)


def is_complete(path: str | Path) -> bool:
    path = Path(path)
    return all((path / f).is_file() for f in (CANDIDATES, STAMPS, META))


def read_dataset(path: str | Path, *, mmap: bool = True) -> Dataset:
    """Open a dataset directory, checking that its three files agree."""
    path = Path(path)
    for f in (META, CANDIDATES, STAMPS):
        if not (path / f).is_file():
            raise DatasetError(f"{path / f}: missing; is {path} a dataset directory?")
    meta = json.loads((path / META).read_text())
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DatasetError(f"{path / META}: field 'schema_version' is {version}, expected {SCHEMA_VERSION}")
    candidates = pd.read_parquet(path / CANDIDATES)
    stamps = np.load(path / STAMPS, mmap_mode="r" if mmap else None)
    if stamps.dtype != np.float32 or stamps.ndim != 4:
        raise DatasetError(
            f"{path / STAMPS}: expected float32 (N, C, H, W), got {stamps.dtype} {stamps.shape}"
        )
    if len(stamps) != len(candidates):
        raise DatasetError(
            f"{path}: {len(candidates)} rows in {CANDIDATES} but {len(stamps)} stamps in {STAMPS}"
        )
    return Dataset(path, candidates, stamps, meta)


#: What :func:`select_inputs` does with a feature the dataset lacks: ``error`` (a
#: :class:`DatasetError` naming the file and the columns) or ``nan`` (a NaN column, which the model's
#: feature preprocessor imputes with its training median and flags; real alerts lacking a feature).
IMPUTATION_POLICIES = ("error", "nan")


@dataclass
class ModelInputs:
    """The rows, features and stamp channels of a dataset that a model reads (see :func:`select_inputs`).

    Attributes:
        dataset: the opened dataset directory (stamps memory-mapped, all rows and channels).
        table: the selected rows of ``candidates.parquet`` (index: row in the dataset), with a NaN
            column for every imputed feature.
        features: feature columns, in the model's order.
        channels: stamp channels by name, in the model's order.
        channel_index: their positions in ``stamps.npy``'s channel axis.
        imputed: features absent from the dataset, filled with NaN (only with ``impute="nan"``).
    """

    dataset: Dataset
    table: pd.DataFrame
    features: list[str]
    channels: list[str]
    channel_index: list[int]
    imputed: list[str]


def select_inputs(
    dataset: str | Path | Dataset,
    *,
    features: list[str] | None = None,
    channels: list[str] | None = None,
    split: str | None = None,
    impute: str = "error",
) -> ModelInputs:
    """Dataset directory -> model inputs: the one place that picks features, channels and rows.

    Training, evaluation, drift monitoring, export and the cross-survey studies all select through
    here, so a missing feature or channel meets the same rule everywhere.

    Args:
        dataset: a dataset directory (or one already opened).
        features: feature columns in order (from the config, ``train.features``, or a trained
            model's feature list); None for every feature of ``meta.json``; ``[]`` for none.
            A per-survey availability profile narrows this list before it gets here.
        channels: stamp channels by name; None for all of ``meta.json``; ``[]`` for none.
        split: keep only the rows of this split (``train``, ``val``, ``test``); None for all rows.
        impute: :data:`IMPUTATION_POLICIES` for features the dataset lacks. A missing channel is
            always an error (no stamp can be made up).
    """
    if impute not in IMPUTATION_POLICIES:
        raise ValueError(f"impute must be one of {IMPUTATION_POLICIES}, got {impute!r}")
    ds = dataset if isinstance(dataset, Dataset) else read_dataset(dataset)
    names = list(ds.meta["channels"])
    channels = names if channels is None else list(channels)
    unknown = [c for c in channels if c not in names]
    if unknown:
        raise DatasetError(f"{ds.path / META}: field 'channels' lacks {unknown} (available: {names})")
    features = list(ds.meta["features"]) if features is None else list(features)
    table = ds.candidates
    if split is not None:
        if "split" not in table.columns:
            raise DatasetError(f"{ds.path / CANDIDATES}: no 'split' column (asked for split {split!r})")
        table = table[table["split"] == split]
    missing = [f for f in features if f not in table.columns]
    if missing and impute == "error":
        raise DatasetError(f"{ds.path / CANDIDATES}: missing feature columns {missing}")
    if missing:
        table = table.assign(**dict.fromkeys(missing, np.nan))
    return ModelInputs(ds, table, features, channels, [names.index(c) for c in channels], missing)
