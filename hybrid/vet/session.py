"""A vetting session: a pool of candidates, its queue, and the votes people cast on it.

The queue of a volunteer is the pool in acquisition order without the candidates that volunteer has
voted on or skipped, and without retired ones: as in Zooniverse projects, a candidate leaves the
queue once ``retire_after`` volunteers have decided it. The review of a model (:meth:`VetSession.review`)
lists its false positives and false negatives on the test split and its completeness against
magnitude, measured against the truth when the pool has it, else against the volunteers' consensus.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hybrid.context.sentence import context_sentence
from hybrid.curation.human import REAL_TYPES, VoteStore, consensus
from hybrid.evaluation.evaluate import MAG_EDGES
from hybrid.evaluation.metrics import completeness, real_bogus_metrics
from hybrid.taxonomy import TRANSIENT_TYPES
from hybrid.vet.pool import CandidatePool, priority


@dataclass
class Review:
    """A model's errors on the reviewed split.

    Attributes:
        false_positives: bogus candidates scored real, highest score first.
        false_negatives: real candidates scored bogus, lowest score first.
        curve: completeness per magnitude bin (:func:`hybrid.evaluation.metrics.completeness`).
        truth: what the labels are (``truth`` or ``human consensus``).
        magnitude: the magnitude column of the curve.
        metrics: real-bogus metrics (empty when a class is missing).
        n: candidates reviewed.
    """

    false_positives: pd.DataFrame
    false_negatives: pd.DataFrame
    curve: pd.DataFrame
    truth: str
    magnitude: str
    metrics: dict = field(default_factory=dict)
    n: int = 0


@dataclass
class VetSession:
    """Everything the page serves.

    Args:
        pool: the candidates.
        store: the vote database.
        queue: acquisition function ordering the queue (``bald``, ``entropy``, ``margin``, ``random``).
        retire_after: decided votes after which a candidate leaves every queue.
        threshold: score threshold of the review.
        seed: seeds the random queue and ties.
    """

    pool: CandidatePool
    store: VoteStore
    queue: str = "entropy"
    retire_after: int = 3
    threshold: float = 0.5
    seed: int = 0
    round_status: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.refresh(self.pool)

    def refresh(self, pool: CandidatePool) -> None:
        """Use ``pool`` (new scores after an active-learning round) and reorder the queue."""
        order = priority(pool, self.queue, seed=self.seed).sort_values(ascending=False, kind="stable")
        with self.lock:
            self.pool, self.order = pool, order.index

    def votes(self) -> pd.DataFrame:
        return self.store.votes(self.pool.name)

    def consensus(self) -> pd.DataFrame:
        return consensus(self.votes())

    def queue_for(self, volunteer: str, *, limit: int | None = None) -> list[str]:
        """The keys still to show ``volunteer``, in queue order."""
        votes = self.votes()
        seen = set(votes.loc[votes["volunteer"] == volunteer, "candidate"])
        cons = consensus(votes)
        retired = set(cons.index[cons["n_votes"] >= self.retire_after])
        out = []
        for key in self.order:
            if key not in seen and key not in retired:
                out.append(key)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def vote(self, key: str, volunteer: str, label: str, type_: str | None = None) -> int:
        self.pool.position(key)  # KeyError for an unknown candidate
        return self.store.cast(self.pool.name, key, volunteer, label, type_)

    def undo(self, volunteer: str) -> str | None:
        return self.store.undo(self.pool.name, volunteer)

    def candidate(self, key: str) -> dict:
        """What the candidate page shows of ``key``."""
        row = self.pool.table.iloc[self.pool.position(key)]
        votes = self.votes()
        mine = votes[votes["candidate"] == key]
        cons = consensus(mine)
        scores = {}
        if self.pool.has_scores and pd.notna(row.get("score")):
            scores = {
                "score": float(row["score"]),
                "types": [(t, float(row[f"p_{t}"])) for t in TRANSIENT_TYPES if f"p_{t}" in row],
                "uncertainty": {
                    k: float(row[k])
                    for k in ("score_std", "entropy", "mutual_info")
                    if k in row and pd.notna(row[k])
                },
            }
        features = [(name, unit, row[name]) for name, unit in self.pool.features.items() if name in row.index]
        sentence = row.get("ctx_sentence")
        if not isinstance(sentence, str) or not sentence:
            sentence = context_sentence(row.to_dict()) if any(k.startswith("ctx_") for k in row.index) else ""
        known = {
            k: row[k] for k in ("truth_real", "truth_type", "label_real", "label_type", "split") if k in row
        }
        return {
            "key": key,
            "row": row,
            "ra": float(row["ra"]) if "ra" in row else float("nan"),
            "dec": float(row["dec"]) if "dec" in row else float("nan"),
            "scores": scores,
            "features": features,
            "sentence": sentence,
            "votes": mine,
            "consensus": cons.iloc[0].to_dict() if len(cons) else None,
            "known": known,
            "rank": int(np.flatnonzero(self.order == key)[0]) + 1,
        }

    def review(self, *, split: str = "test", limit: int = 48) -> Review:
        """False positives, false negatives and completeness of the model's scores on ``split``."""
        t = self.pool.table
        if not self.pool.has_scores:
            raise ValueError(f"{self.pool.name}: no scores to review; give --bundle or a scores file")
        if "split" in t and (t["split"] == split).any():
            t = t[t["split"] == split]
        if "truth_real" in t and t["truth_real"].notna().all():
            truth, what = t["truth_real"].astype(bool), "truth"
        else:
            cons = self.consensus()
            decided = cons["label_real"].dropna()
            t = t[t.index.isin(decided.index)]
            truth, what = decided.reindex(t.index).astype(bool), "human consensus"
        score = t["score"].to_numpy(float)
        y = truth.to_numpy(bool)
        called = score >= self.threshold
        fp = t[~y & called].sort_values("score", ascending=False)
        fn = t[y & ~called].sort_values("score", ascending=True)
        mag = "truth_mag" if "truth_mag" in t else "mag_psf"
        values = t[mag].to_numpy(float) if mag in t else np.full(len(t), np.nan)
        curve = completeness(values[y], called[y], MAG_EDGES)
        metrics = real_bogus_metrics(y, score, self.threshold) if 0 < y.sum() < len(y) else {}
        return Review(fp.head(limit), fn.head(limit), curve, what, mag, metrics, len(t))

    def labels(self) -> pd.DataFrame:
        """The consensus of every voted candidate with its ids (the export of the page)."""
        cons = self.consensus()
        ids = [c for c in ("alert_id", "object_id", "ra", "dec", "mjd", "split") if c in self.pool.table]
        out = cons.join(self.pool.table[ids], how="left")
        out.insert(0, "dataset", self.pool.name)
        return out.reset_index()


#: keyboard shortcuts of the candidate page: key -> (label, type)
SHORTCUTS: dict[str, tuple[str, str | None]] = {
    "r": ("real", None),
    "b": ("bogus", None),
    "s": ("skip", None),
    **{str(i + 1): ("real", t) for i, t in enumerate(REAL_TYPES)},
}


def round_dirs(work_dir: str | Path) -> list[Path]:
    """Finished active-learning rounds of a work directory, oldest first."""
    return sorted(p.parent for p in Path(work_dir).glob("round-*/scores.parquet"))
