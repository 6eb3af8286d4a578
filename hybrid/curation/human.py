"""Human labels: the votes people cast on the vetting page (``hybrid vet``), and the ``human`` label source.

Votes live in one SQLite file (:class:`VoteStore`), one row per vote, written in its own transaction
with the write-ahead log and ``synchronous=FULL``: a vote that the page has acknowledged survives a
killed server or a power cut. Undo does not delete a vote, it marks it undone, so the record of who
said what stays complete.

Several volunteers may vote on one candidate, as in citizen-science vetting (Zooniverse's Supernova
Hunters, Wright et al. 2017, MNRAS 472, 1315; GOTO's Kilonova Seekers, Killestein et al. 2024). The
:func:`consensus` of a candidate is the majority of its real / bogus votes (a tie is undecided), its
agreement the fraction of votes with the majority, and its type the most common type among the
votes for real.

:class:`HumanLabels` is the ``curation=human`` option: a load-time step (the dataset itself is built
as with ``curation=truth``, so both share one cached dataset) that gives the training and validation
rows the volunteers' consensus and ``label_source = "human"``; training rows nobody decided leave the
training split (``unvoted: drop``) or keep the dataset's labels (``keep``). Candidates are matched by
the dataset directory's name and the candidate's key (:func:`candidate_keys`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from hybrid.taxonomy import TRANSIENT_TYPES

#: What a vote may say; ``skip`` takes the candidate out of that volunteer's queue and is no label.
VOTE_LABELS = ("real", "bogus", "skip")
#: The types a volunteer may give a real candidate.
REAL_TYPES = tuple(t for t in TRANSIENT_TYPES if t != "bogus")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,        -- name of the dataset directory (or input file) voted on
    candidate TEXT NOT NULL,      -- the candidate's key in it (candidate_keys)
    volunteer TEXT NOT NULL,
    label TEXT NOT NULL CHECK (label IN ('real', 'bogus', 'skip')),
    type TEXT,                    -- transient type of a real vote, when given
    cast_at TEXT NOT NULL,        -- UTC, ISO 8601
    undone_at TEXT                -- set by undo; the vote stays on record
);
CREATE INDEX IF NOT EXISTS votes_candidate ON votes (dataset, candidate);
CREATE INDEX IF NOT EXISTS votes_volunteer ON votes (dataset, volunteer);
"""


def candidate_keys(table: pd.DataFrame) -> np.ndarray:
    """The key of each candidate of a dataset table: its ``alert_id`` when the table has one (real
    alerts), else its row number in the dataset (the table's index), as strings."""
    if "alert_id" in table:
        return table["alert_id"].astype(str).to_numpy()
    return table.index.to_numpy().astype(str)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class VoteStore:
    """The votes of one SQLite file (created on first use).

    Args:
        path: the database file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # a connection per operation: the web server answers requests from several threads
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before its first read (so a check and its write are atomic)."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def cast(self, dataset: str, candidate: str, volunteer: str, label: str, type_: str | None = None) -> int:
        """Record one vote in its own transaction (durable when this returns); returns its id. A
        volunteer has one standing vote per candidate: a repeat (a double key press) returns the
        standing vote's id; to change it, undo it first."""
        if label not in VOTE_LABELS:
            raise ValueError(f"vote label must be one of {VOTE_LABELS}, got {label!r}")
        if type_ is not None and (label != "real" or type_ not in REAL_TYPES):
            raise ValueError(f"a type goes with a real vote and is one of {REAL_TYPES}, got {type_!r}")
        if not volunteer.strip():
            raise ValueError("a vote needs a volunteer name")
        with self._transaction() as conn:
            standing = conn.execute(
                "SELECT id FROM votes WHERE dataset=? AND candidate=? AND volunteer=? AND undone_at IS NULL",
                (dataset, str(candidate), volunteer.strip()),
            ).fetchone()
            if standing is not None:
                return int(standing[0])
            cur = conn.execute(
                "INSERT INTO votes (dataset, candidate, volunteer, label, type, cast_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (dataset, str(candidate), volunteer.strip(), label, type_, _now()),
            )
            return int(cur.lastrowid)

    def undo(self, dataset: str, volunteer: str) -> str | None:
        """Mark the volunteer's latest vote on ``dataset`` undone; returns its candidate (None if none)."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, candidate FROM votes WHERE dataset=? AND volunteer=? AND undone_at IS NULL "
                "ORDER BY id DESC LIMIT 1",
                (dataset, volunteer.strip()),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE votes SET undone_at=? WHERE id=?", (_now(), row[0]))
            return str(row[1])

    def votes(self, dataset: str | None = None, *, include_undone: bool = False) -> pd.DataFrame:
        """The votes (of one dataset, or all), oldest first."""
        query = "SELECT * FROM votes"
        where, args = [], []
        if dataset is not None:
            where.append("dataset=?")
            args.append(dataset)
        if not include_undone:
            where.append("undone_at IS NULL")
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            table = pd.read_sql_query(query + " ORDER BY id", conn, params=args)
        for col in ("type", "undone_at"):  # NULL stays None (pandas reads it as NaN in a text column)
            table[col] = table[col].astype(object).where(table[col].notna(), None)
        return table

    def datasets(self) -> list[str]:
        """The datasets that have votes."""
        with self._connect() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT dataset FROM votes ORDER BY dataset")]


def consensus(votes: pd.DataFrame) -> pd.DataFrame:
    """Per candidate (index): ``n_votes`` (real and bogus votes), ``n_real``, ``volunteers``,
    ``label_real`` (1.0 / 0.0, NaN when undecided: no votes or a tie), ``agreement`` (fraction of the
    votes with the majority) and ``label_type`` (most common type among the real votes; the first of
    the taxonomy's order on a tie; None when no real vote gave one)."""
    cols = ["n_votes", "n_real", "volunteers", "label_real", "agreement", "label_type"]
    decided = votes[votes["label"].isin(["real", "bogus"])]
    if decided.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="candidate"))
    grp = decided.groupby("candidate")
    n = grp.size()
    n_real = grp["label"].apply(lambda s: int((s == "real").sum()))
    out = pd.DataFrame({"n_votes": n, "n_real": n_real, "volunteers": grp["volunteer"].nunique()})
    out["label_real"] = np.where(2 * n_real > n, 1.0, np.where(2 * n_real < n, 0.0, np.nan))
    out["agreement"] = np.maximum(n_real, n - n_real) / n
    typed = decided[(decided["label"] == "real") & decided["type"].notna()]
    order = {t: i for i, t in enumerate(TRANSIENT_TYPES)}
    types = typed.groupby("candidate")["type"].agg(
        lambda s: min(s.value_counts().items(), key=lambda kv: (-kv[1], order.get(kv[0], 99)))[0]
    )
    out["label_type"] = types.reindex(out.index).astype(object)
    out.loc[out["label_real"] != 1.0, "label_type"] = None
    out.index.name = "candidate"
    return out[cols]


class HumanLabels:
    """The ``human`` label source: training and validation labels from the volunteers' consensus.

    Args:
        votes: the vote database (written by ``hybrid vet``).
        min_votes: decided votes a candidate needs before its consensus is used.
        min_agreement: least agreement (fraction of votes with the majority) for the consensus to be used.
        unvoted: training rows without a usable consensus: ``drop`` them (train on human labels only)
            or ``keep`` the dataset's labels.
        untyped: the type given to a candidate voted real without a type: ``keep`` the dataset's type
            when it is a real one, else this type (``hostless`` by default: the type that assumes least).
        dataset: the dataset name the votes were cast on (default: the directory trained on, see
            :meth:`for_dataset`).
    """

    def __init__(
        self,
        votes: str | Path,
        *,
        min_votes: int = 1,
        min_agreement: float = 0.5,
        unvoted: str = "drop",
        untyped: str = "hostless",
        dataset: str | None = None,
    ) -> None:
        if unvoted not in ("drop", "keep"):
            raise ValueError(f"curation.human.unvoted must be 'drop' or 'keep', got {unvoted!r}")
        if untyped not in REAL_TYPES:
            raise ValueError(f"curation.human.untyped must be one of {REAL_TYPES}, got {untyped!r}")
        self.votes, self.min_votes, self.min_agreement = Path(votes), int(min_votes), float(min_agreement)
        self.unvoted, self.untyped, self.dataset = unvoted, untyped, dataset
        self.summary: dict[str, float | int] = {}

    def for_dataset(self, dataset: str | Path) -> HumanLabels:
        """This source for the dataset directory ``dataset`` (unless a dataset name was configured)."""
        self.dataset = self.dataset or Path(dataset).name
        return self

    def __call__(self, table: pd.DataFrame, features: list[str]) -> pd.DataFrame:
        """The table with the consensus labels on its voted train / val rows (``relabel`` contract of
        :class:`hybrid.training.data.CandidateDataModule`)."""
        if not self.votes.is_file():
            raise FileNotFoundError(
                f"{self.votes}: no vote database (curation.human.votes); vet with `hybrid vet`"
            )
        store = VoteStore(self.votes)
        votes = store.votes(self.dataset)
        if votes.empty:
            raise ValueError(
                f"{self.votes}: no votes for dataset {self.dataset!r} (votes exist for: "
                f"{', '.join(store.datasets()) or 'none'}); set curation.human.dataset"
            )
        cons = consensus(votes)
        usable = cons[
            cons["label_real"].notna()
            & (cons["n_votes"] >= self.min_votes)
            & (cons["agreement"] >= self.min_agreement)
        ]
        keys = pd.Series(candidate_keys(table), index=table.index)
        in_split = table["split"].isin(["train", "val"])
        hit = in_split & keys.isin(usable.index)
        c = usable.reindex(keys[hit].to_numpy())
        real = c["label_real"].to_numpy() == 1.0
        own = table.loc[hit, "label_type"].to_numpy(object)
        own_real = np.isin(own, REAL_TYPES)
        voted_type = c["label_type"].to_numpy(object)
        types = np.where(
            ~real, "bogus", np.where(pd.notna(voted_type), voted_type, np.where(own_real, own, self.untyped))
        )
        table = table.copy()
        table["label_source"] = table["label_source"].astype(object)
        table["label_type"] = table["label_type"].astype(object)
        table.loc[hit, "label_real"] = real
        table.loc[hit, "label_type"] = types
        table.loc[hit, "label_source"] = "human"
        truth = table.loc[hit, "truth_real"] if "truth_real" in table else None
        self.summary = {
            "human_votes": len(votes),
            "human_labelled_train": int((hit & (table["split"] == "train")).sum()),
            "human_labelled_val": int((hit & (table["split"] == "val")).sum()),
            "human_mean_agreement": float(c["agreement"].mean()) if len(c) else float("nan"),
        }
        if truth is not None and len(truth) and truth.notna().all():
            # how often the volunteers' consensus differs from the simulator's truth
            self.summary["human_label_error_rate"] = float((truth.to_numpy(bool) != real).mean())
        if self.unvoted == "drop":
            table = table[~((table["split"] == "train") & ~hit)]
        return table

    def metrics(self) -> dict[str, float | int]:
        """Flat metrics of the step for metrics.json (empty before it ran)."""
        return dict(self.summary)


def human_labels(cfg: DictConfig, dataset: str | Path) -> HumanLabels | None:
    """The configured human label source for ``dataset`` (``curation.human``), or None."""
    from hydra.utils import instantiate

    spec = cfg.curation.get("human") if cfg.get("curation") else None
    return None if spec is None else instantiate(spec).for_dataset(dataset)


Relabel = Callable[[pd.DataFrame, list[str]], pd.DataFrame]


def chain(*steps: Relabel | None) -> Relabel | None:
    """One ``relabel`` step that applies the given ones in order (None when there are none)."""
    todo = [s for s in steps if s is not None]
    if len(todo) <= 1:
        return todo[0] if todo else None

    def run(table: pd.DataFrame, features: list[str]) -> pd.DataFrame:
        for step in todo:
            table = step(table, features)
        return table

    return run
