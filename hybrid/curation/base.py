"""The label-source contract: what a source sees of one epoch, what it returns, and its registry.

Kept apart from :mod:`hybrid.curation` so that the sources (here and in
:mod:`hybrid.curation.algorithmic`) import the contract without importing the package that collects them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybrid.detection.candidates import Frame, StampSet
from hybrid.registry import Registry
from hybrid.sim.field import SimulatedEpoch, SimulatedField


@dataclass
class EpochContext:
    """Everything a label source may use for one science epoch."""

    field: SimulatedField
    epoch_index: int
    epoch: SimulatedEpoch
    frame: Frame
    candidates: pd.DataFrame  # features + truth columns, one row per detection
    stamps: StampSet
    rng: np.random.Generator
    stamp_size: int


class LabelSource(ABC):
    """Contract: return labelled rows (with label_real, label_type, label_source) and their stamps."""

    name: str

    @abstractmethod
    def label(self, ctx: EpochContext) -> tuple[pd.DataFrame, StampSet]: ...


LABEL_SOURCES: Registry[LabelSource] = Registry("label source", "hybrid.curation", contract=LabelSource)


def labelled(rows: pd.DataFrame, real: np.ndarray, types: np.ndarray, source: str) -> pd.DataFrame:
    """``rows`` with the labels a source gave them (``label_real``, ``label_type``, ``label_source``)."""
    return rows.assign(
        label_real=np.asarray(real, bool), label_type=np.asarray(types, object), label_source=source
    )
