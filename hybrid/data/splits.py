"""Train / validation / test splits by object, never by alert.

Every candidate of one astrophysical object (or one persistent artifact) goes to the same split, so a
model is never tested on an object it saw in training. The assignment hashes the object id, so it
does not depend on which other rows exist: a resumed or enlarged build keeps every object's split.
"""

from __future__ import annotations

import zlib

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(
    object_ids: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> np.ndarray:
    """'train', 'val' or 'test' for each object id, with the given expected fractions."""
    f = np.asarray(fractions, float)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    u = np.array([zlib.crc32(f"{seed}:{o}".encode()) / 2**32 for o in object_ids])
    edges = np.cumsum(f)[:2]
    return np.asarray(SPLITS, dtype=object)[np.searchsorted(edges, u, side="right")]
