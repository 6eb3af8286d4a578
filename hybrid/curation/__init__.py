"""Curation: which detections become labelled training rows, with which labels, from which source.

Surveys build real-bogus sets in three ways, and each row records its ``label_source``:

* ``truth`` -- a small, pure, "human-vetted" set: every detection of a vetted field is labelled by
  the simulator's truth (here, what a careful human scanner would conclude);
* ``algorithmic`` -- as surveys do at scale: detections of known asteroids are real, randomly drawn
  detections are bogus, with the contamination that brings (some random draws are real transients);
* ``human`` -- votes cast on the vetting page (``hybrid vet``; :mod:`hybrid.curation.human`), applied when
  training loads the dataset;
* ``injected`` -- synthetic transients made by adding a detected asteroid's difference stamp onto the
  stamps of a catalogued galaxy at an offset (Killestein et al. 2021, MNRAS 503, 4838, gotorb).

:class:`Curation` decides per field whether it is vetted (``vetted_fraction``) and applies its other
sources to the fields that are not. The true labels (``truth_*``, ``bogus_kind``) are kept on every
row, so label noise can always be measured.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from hybrid.curation.algorithmic import AlgorithmicLabels, InjectedLabels
from hybrid.curation.base import LABEL_SOURCES, EpochContext, LabelSource, labelled
from hybrid.curation.human import HumanLabels, VoteStore
from hybrid.detection.candidates import StampSet


@LABEL_SOURCES.register("truth")
class TruthLabels(LabelSource):
    """Every detection, labelled by the truth."""

    def label(self, ctx: EpochContext) -> tuple[pd.DataFrame, StampSet]:
        c = ctx.candidates
        return labelled(c, c["truth_real"], c["truth_type"], "truth"), ctx.stamps


class Curation:
    """Applies truth labels to vetted fields and the configured sources to all other fields.

    Args:
        vetted_fraction: fraction of fields labelled entirely by truth (decided per field id).
        sources: label sources for the fields that are not vetted.
        seed: salt of the per-field vetting draw.
        human: the ``human`` label source (:class:`hybrid.curation.human.HumanLabels`, ``curation=human``):
            the vetting page's votes, applied when training loads the dataset, not while building it.
    """

    def __init__(
        self,
        vetted_fraction: float = 1.0,
        sources: Sequence[LabelSource] = (),
        seed: int = 0,
        human: object | None = None,
    ) -> None:
        if not 0.0 <= vetted_fraction <= 1.0:
            raise ValueError(f"curation.vetted_fraction must be in [0, 1], got {vetted_fraction}")
        self.vetted_fraction = vetted_fraction
        self.sources = list(sources)
        self.seed = seed
        self.human = human

    def is_vetted(self, field_id: int) -> bool:
        u = zlib.crc32(f"{self.seed}:{field_id}".encode()) / 2**32
        return u < self.vetted_fraction

    def __call__(self, ctx: EpochContext) -> tuple[pd.DataFrame, StampSet]:
        sources = [TruthLabels()] if self.is_vetted(ctx.field.field_id) else self.sources
        parts = [source.label(ctx) for source in sources]
        parts = [(rows, stamps) for rows, stamps in parts if len(rows)]
        if not parts:
            return labelled(ctx.candidates.iloc[:0], [], [], "truth"), ctx.stamps.take(np.zeros(0, int))
        rows = pd.concat([p[0] for p in parts], ignore_index=True)
        stamps = concat_stamps([p[1] for p in parts])
        return rows, stamps


def concat_stamps(parts: Sequence[StampSet]) -> StampSet:
    with_score = all(p.score is not None for p in parts)
    return StampSet(
        *(np.concatenate([getattr(p, a) for p in parts]) for a in ("sci", "ref", "diff", "variance", "mask")),
        score=np.concatenate([p.score for p in parts]) if with_score else None,
    )


__all__ = [
    "LABEL_SOURCES",
    "AlgorithmicLabels",
    "Curation",
    "EpochContext",
    "HumanLabels",
    "InjectedLabels",
    "LabelSource",
    "TruthLabels",
    "VoteStore",
    "concat_stamps",
]
