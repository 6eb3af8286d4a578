"""The candidates people vet: stamps, features, context and the model's scores, in queue order.

A pool is read from a dataset directory (stamps memory-mapped) or from a scores file written by
``hybrid predict`` (its ``source`` inputs are read again for the stamps and features). With a bundle,
a dataset is scored first by :class:`hybrid.serving.Predictor` into ``<work dir>/scores-<bundle>.parquet``
(append-safe, so a killed scoring resumes). The queue is ordered by an acquisition function of
:mod:`hybrid.active` on the scores' predictive distribution: ``entropy`` and ``margin`` need a score,
``bald`` the ``mutual_info`` of an MC-dropout or ensemble bundle (``hybrid export --mc-dropout S``),
``random`` nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hybrid.active.acquisition import ACQUISITIONS
from hybrid.curation.human import candidate_keys
from hybrid.data.dataset import DatasetError, is_complete, read_dataset
from hybrid.detection.candidates import CHANNELS
from hybrid.taxonomy import TRANSIENT_TYPES
from hybrid.uncertainty.predictive import Predictive

log = logging.getLogger(__name__)

#: the model outputs a pool carries (``hybrid predict`` columns)
SCORE_COLUMNS = ("score", *(f"p_{t}" for t in TRANSIENT_TYPES), "score_std", "entropy", "mutual_info")


@dataclass
class CandidatePool:
    """Candidates to vet.

    Attributes:
        name: the dataset name votes are recorded under (the dataset directory's name, or the scores
            file's stem for alert files).
        table: one row per candidate, indexed by its key (:func:`hybrid.curation.human.candidate_keys`),
            with ids, features, context, labels / truth when known, and the score columns.
        stamps: (N, 3, S, S) sci, ref, diff in the table's row order (ADU; NaN where there are no data).
        features: feature name -> unit.
        dataset: the dataset directory when the pool is one (active-learning rounds train on it).
    """

    name: str
    table: pd.DataFrame
    stamps: np.ndarray
    features: dict[str, str]
    dataset: Path | None = None

    def __len__(self) -> int:
        return len(self.table)

    @property
    def has_scores(self) -> bool:
        return "score" in self.table and bool(self.table["score"].notna().any())

    def position(self, key: str) -> int:
        """Row number of the candidate ``key`` (KeyError with the key when unknown)."""
        try:
            return int(self.table.index.get_loc(key))
        except KeyError:
            raise KeyError(f"no candidate {key!r} in {self.name}") from None

    def stamp(self, key: str) -> np.ndarray:
        """(3, S, S) sci, ref, diff of one candidate."""
        return np.asarray(self.stamps[self.position(key)], np.float32)

    def with_scores(self, scores: pd.DataFrame) -> CandidatePool:
        """This pool with the score columns of ``scores`` (indexed by key) replacing its own."""
        kept = self.table.drop(columns=[c for c in SCORE_COLUMNS if c in self.table])
        cols = [c for c in SCORE_COLUMNS if c in scores]
        table = kept.join(scores[cols][~scores.index.duplicated(keep="last")], how="left")
        return CandidatePool(self.name, table, self.stamps, self.features, self.dataset)


def _dataset_pool(path: Path) -> CandidatePool:
    ds = read_dataset(path)
    missing = [c for c in CHANNELS if c not in ds.meta["channels"]]
    if missing:
        raise DatasetError(f"{path / 'meta.json'}: channels {missing} missing; vetting shows {CHANNELS}")
    table = ds.candidates.copy()
    table.index = pd.Index(candidate_keys(ds.candidates), name="key")
    if table.index.has_duplicates:
        raise DatasetError(f"{path / 'candidates.parquet'}: field alert_id has duplicate values")
    order = [ds.meta["channels"].index(c) for c in CHANNELS]
    stamps = ds.stamps if order == list(range(len(order))) else _Reordered(ds.stamps, order)
    return CandidatePool(path.name, table, stamps, dict(ds.meta["features"]), path)


class _Reordered:
    """Rows of a memory-mapped stamp array with its channels put in sci/ref/diff order on access."""

    def __init__(self, stamps: np.ndarray, order: list[int]) -> None:
        self.stamps, self.order = stamps, order

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.stamps[i])[self.order]

    def __len__(self) -> int:
        return len(self.stamps)


def _scores_table(path: Path) -> pd.DataFrame:
    scores = pd.read_parquet(path)
    for col in ("source", "alert_id", "score"):
        if col not in scores:
            raise DatasetError(f"{path}: field {col!r} missing (a scores file of `hybrid predict` has it)")
    return scores


def load_pool(path: str | Path, *, bundle: str | Path | None = None, work_dir: str | Path) -> CandidatePool:
    """The pool of ``path``: a dataset directory, or a scores Parquet file of ``hybrid predict``.

    Args:
        path: the input.
        bundle: an export bundle to score a dataset with (scores cached in ``work_dir``).
        work_dir: where scores of the bundle are written.
    """
    path = Path(path)
    if path.is_dir():
        if not is_complete(path):
            raise DatasetError(
                f"{path}: not a complete dataset directory (candidates.parquet, stamps.npy, meta.json)"
            )
        pool = _dataset_pool(path)
        if bundle is None:
            return pool
        from hybrid.serving import Predictor

        out = Path(work_dir) / f"scores-{Path(bundle).resolve().name}.parquet"
        with Predictor(bundle, workers=1) as predictor:
            log.info("scoring %s with %s -> %s", path, bundle, out)
            predictor.predict_to_parquet([path], out, kind="dataset", progress=True)
        return pool.with_scores(pd.read_parquet(out).set_index("alert_id"))
    if path.suffix != ".parquet" or not path.is_file():
        raise FileNotFoundError(f"{path}: neither a dataset directory nor a scores Parquet file")
    if bundle is not None:
        raise ValueError(f"{path} is already scored; --bundle goes with a dataset directory")
    scores = _scores_table(path)
    sources = sorted(set(scores["source"].astype(str)))
    if len(sources) == 1 and Path(sources[0]).is_dir():
        pool = _dataset_pool(Path(sources[0]))
        return pool.with_scores(scores.set_index(scores["alert_id"].astype(str)))
    from hybrid.data.readers import read_alerts

    missing = [s for s in sources if not Path(s).exists()]
    if missing:
        raise FileNotFoundError(f"{path}: field source names inputs that are gone: {', '.join(missing[:3])}")
    batch = read_alerts(sources)
    table = batch.candidates.copy()
    table.index = pd.Index(table["alert_id"].astype(str), name="key")
    keep = ~table.index.duplicated(keep="first")
    from hybrid.data.readers import framework_features

    units = framework_features()
    features = {f: units[f] for f in units if f in table}
    pool = CandidatePool(path.stem, table[keep], batch.stamps[keep], features)
    return pool.with_scores(scores.set_index(scores["alert_id"].astype(str)))


def predictive(table: pd.DataFrame) -> Predictive:
    """The real-bogus predictive distribution of scored candidates: from ``score`` (one member), with
    ``entropy`` and ``mutual_info`` of an uncertainty bundle when the table has them."""
    score = table["score"].to_numpy(float)
    pred = Predictive.from_binary(np.nan_to_num(score, nan=0.5)[None])
    if "entropy" in table:
        pred.entropy = table["entropy"].to_numpy(float)
    if "mutual_info" in table:
        pred.mutual_info = table["mutual_info"].to_numpy(float)
        pred.expected_entropy = pred.entropy - pred.mutual_info
    return pred


def priority(pool: CandidatePool, queue: str, *, seed: int = 0) -> pd.Series:
    """The acquisition score of every candidate (higher: shown first), by the acquisition ``queue``."""
    acquisition = ACQUISITIONS.get(queue)()
    rng = np.random.default_rng([seed, 0x7E7])
    if queue == "random":
        return pd.Series(rng.random(len(pool)), index=pool.table.index)
    if not pool.has_scores:
        raise ValueError(
            f"the {queue!r} queue needs scores: give --bundle, or a scores file of `hybrid predict`"
        )
    if acquisition.stochastic and "mutual_info" not in pool.table:
        raise ValueError(
            f"the {queue!r} queue needs mutual_info: score with an uncertainty bundle "
            "(`hybrid export RUN --mc-dropout 20`)"
        )
    value = acquisition.score(predictive(pool.table), rng)
    return pd.Series(np.nan_to_num(value, nan=-np.inf), index=pool.table.index)
