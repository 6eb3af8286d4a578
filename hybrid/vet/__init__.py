"""The vetting page: people look at candidates, label them, and the labels train the next model.

``hybrid vet DATASET_OR_SCORES [--bundle B] [--queue bald|entropy|margin|random] [--port P]`` serves a
local web application (Flask, :mod:`hybrid.vet.app`) over a pool of candidates
(:mod:`hybrid.vet.pool`) in the order of an acquisition function of :mod:`hybrid.active`. Votes go
to a SQLite store (:class:`hybrid.curation.VoteStore`) and come back to training as the ``human``
label source (``python run.py curation=human``); an active-learning round (:mod:`hybrid.vet.rounds`)
retrains on them from the page and reorders the queue. The page needs the ``[vet]`` extra (Flask).
"""

from __future__ import annotations

import logging
from pathlib import Path

from hybrid.curation.human import VoteStore
from hybrid.vet.pool import CandidatePool, load_pool, priority
from hybrid.vet.session import Review, VetSession

log = logging.getLogger(__name__)

#: where `hybrid vet` keeps its votes unless told otherwise (the default of curation=human too)
DEFAULT_VOTES = Path("outputs/vet/votes.sqlite")


def open_session(
    source: str | Path,
    *,
    bundle: str | Path | None = None,
    queue: str = "entropy",
    votes: str | Path = DEFAULT_VOTES,
    work_dir: str | Path | None = None,
    retire_after: int = 3,
    threshold: float = 0.5,
    seed: int = 0,
) -> tuple[VetSession, Path]:
    """The session of ``source`` (a dataset directory or a scores file) and its work directory
    (``outputs/vet/<pool name>`` by default: bundle scores and active-learning rounds). The newest
    finished round's scores, when there is one, replace the bundle's."""
    from hybrid.vet.rounds import latest_scores

    source = Path(source)
    work = (
        Path(work_dir)
        if work_dir
        else Path("outputs/vet") / (source.name if source.is_dir() else source.stem)
    )
    pool = load_pool(source, bundle=bundle, work_dir=work)
    work.mkdir(parents=True, exist_ok=True)
    latest = latest_scores(work)
    if latest is not None:
        log.info("using the scores of the newest active-learning round in %s", work)
        pool = pool.with_scores(latest)
    session = VetSession(
        pool, VoteStore(votes), queue=queue, retire_after=retire_after, threshold=threshold, seed=seed
    )
    return session, work


__all__ = ["DEFAULT_VOTES", "CandidatePool", "Review", "VetSession", "load_pool", "open_session", "priority"]
