"""Scoring alerts with an export bundle: in-process (:class:`Predictor`) or to Parquet (``hybrid predict``).

The Predictor needs nothing but the bundle (numpy, onnxruntime and the readers; no torch). Inputs are
read in chunks of ``batch_size`` alerts; each chunk is decoded (cutouts gunzipped and parsed, fields
mapped), preprocessed and scored in one of ``workers`` worker processes (or threads), each running
onnxruntime on one core, with at most two chunks per worker in flight, so memory stays bounded
whatever the input size and every core stays busy.

Scores files are append-safe: every scored chunk is first written as its own Parquet part (atomically)
in ``<out>.parts/``; at the end the parts and any existing ``<out>`` are streamed into a new ``<out>``
that replaces the old one atomically. A killed run leaves its parts, and the next run with the same
``--out`` keeps them and skips alerts already scored (by ``source`` and ``alert_id``). Rejected
alerts (with their reason) go to ``<out stem>.rejected.csv``. Runs on the same ``out`` take turns: each
holds ``<out>.lock`` (a file lock, released by the system even when a process is killed) while it
writes, so two processes never interleave parts or merges.

Every scored row carries quality flags (:data:`FLAG_COLUMNS`), so that a broker can tag rather than
drop: ``flag_stamp_padding`` (fraction of the stamp that is padding, where the cutout was smaller
than the bundle's stamp), ``flag_nan_fraction`` (largest fraction of NaN pixels over the sci / ref /
diff stamps), ``flag_repaired`` (comma-separated names of features whose impossible values were
repaired to missing, "" if none) and ``flag_duplicate_id`` (the ``alert_id`` was already scored in
this output or earlier in the input).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from hybrid.context.associate import CONTEXT_TEXT_COLUMNS
from hybrid.data.readers import AlertBatch, Chunk, Rejection, add_context, iter_chunks
from hybrid.data.readers.base import ID_COLUMNS, duplicate_ids
from hybrid.detection.candidates import CHANNELS
from hybrid.export.bundle import Bundle, load_bundle

log = logging.getLogger(__name__)

#: label and truth columns carried from the input into the scores when present (for evaluation)
CARRIED = ("label_real", "label_type", "truth_real", "truth_type", "split")
#: quality flags of every scored row (see the module doc)
FLAG_COLUMNS = ("flag_stamp_padding", "flag_nan_fraction", "flag_repaired", "flag_duplicate_id")


def quality_flags(batch: AlertBatch) -> pd.DataFrame:
    """The :data:`FLAG_COLUMNS` of a decoded batch (duplicates only within the batch)."""
    table = batch.candidates
    n = len(table)
    nan = (~np.isfinite(batch.stamps)).mean(axis=(-2, -1)).max(axis=1) if n else np.zeros(0)
    edge = table["stamp_edge_fraction"] if "stamp_edge_fraction" in table else np.zeros(n)
    repaired = table["flag_repaired"] if "flag_repaired" in table else [""] * n
    return pd.DataFrame(
        {
            "flag_stamp_padding": np.asarray(edge, np.float64),
            "flag_nan_fraction": np.asarray(nan, np.float64),
            "flag_repaired": pd.Series(repaired, dtype=str).to_numpy(),
            "flag_duplicate_id": duplicate_ids(table["alert_id"].tolist(), set()),
        }
    )


@dataclass
class PredictSummary:
    """What a ``predict`` run did."""

    out: Path
    scored: int = 0
    skipped_already_scored: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.out}: {self.scored} alerts scored, {len(self.rejected)} rejected" + (
            f", {self.skipped_already_scored} already scored" if self.skipped_already_scored else ""
        )


class Predictor:
    """Scores alerts with a bundle.

    Args:
        bundle: a bundle directory or an opened :class:`~hybrid.export.Bundle`.
        workers: worker threads or processes (one core each; onnxruntime runs single-threaded in each).
        batch_size: alerts per chunk.
        verify: check checksums and the golden pair when opening the bundle.
        backend: ``thread`` (default: worker threads in this process, no start-up cost) or
            ``process`` (a pool of worker processes, started on first use and kept until
            :meth:`close`; decoding holds the GIL for part of its time, so processes use all cores
            fully; the calling script needs the ``if __name__ == "__main__":`` guard, as for any
            :mod:`multiprocessing` code, because workers are started by a fork server).
        context: a :class:`~hybrid.context.ContextAssociator` (e.g. ``conf/context/ztf_real.yaml``):
            the ``ctx_*`` features of every alert are computed from its knowledge base before scoring
            (:func:`~hybrid.data.readers.add_context`), and the context class and names are written
            beside the scores. Each worker process loads the catalogues once. None: the features
            stay as the reader gives them (missing for ZTF and Rubin alerts).

    Example::

        with Predictor("bundle/") as predictor:
            scores = predictor.score(read_alerts("alerts.parquet"))   # a DataFrame
            predictor.predict_to_parquet(["night/"], "scores.parquet")
    """

    def __init__(
        self,
        bundle: str | Path | Bundle,
        *,
        workers: int = 2,
        batch_size: int = 256,
        verify: bool = True,
        backend: str = "thread",
        context: Any = None,
    ) -> None:
        if backend not in ("process", "thread"):
            raise ValueError(f"backend must be 'process' or 'thread', got {backend!r}")
        self.workers = max(int(workers), 1)
        self.backend = backend
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, threads=1, verify=verify)
        self.batch_size = int(batch_size)
        self.context = context
        image = self.bundle.preprocess.get("image")
        self.channel_index = [CHANNELS.index(c) for c in image["channels"]] if image else []
        self.types = list(self.bundle.labels["p_types"])
        self._pool: Executor | None = None
        #: CPU seconds spent in worker processes (process backend), for benchmarks
        self.worker_cpu_seconds = 0.0

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker pool (a later call starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __del__(self) -> None:
        self.close()

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.backend == "thread":
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="predict")
            else:
                self._pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_start_worker,
                    initargs=(str(self.bundle.path), self.batch_size, self.context),
                )
        return self._pool

    @property
    def stamp_size(self) -> int:
        return self.bundle.stamp_size

    def score_arrays(self, stamps: np.ndarray | None, features: np.ndarray | None) -> dict[str, np.ndarray]:
        """Output name -> values for raw stamps (N, 3, S, S) in sci/ref/diff order and raw features
        (N, F) in the bundle's feature order (one call; no threads)."""
        # a copy of the whole batch's stamps only when the bundle takes other channels than all three
        if stamps is not None and self.channel_index and self.channel_index != list(range(stamps.shape[1])):
            stamps = stamps[:, self.channel_index]
        return self.bundle.run(stamps, features)

    def _columns(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = {}
        for name, value in outputs.items():
            if name == "p_types":
                cols.update({f"p_{t}": value[:, j] for j, t in enumerate(self.types)})
            elif value.ndim == 1:
                cols[name] = value
            else:
                cols.update({f"{name}_{j}": value[:, j] for j in range(value.shape[1])})
        return cols

    def score_batch(self, batch: AlertBatch) -> pd.DataFrame:
        """Ids (and labels, when the input has them) with ``score``, ``p_<type>`` and extra outputs."""
        table = batch.candidates
        keep = [c for c in (*ID_COLUMNS, *CARRIED, *CONTEXT_TEXT_COLUMNS) if c in table]
        out = pd.concat([table[keep].reset_index(drop=True), quality_flags(batch)], axis=1)
        if len(table) == 0:
            return out
        features = self.bundle.feature_matrix(table) if self.bundle.feature_names else None
        outputs = self.score_arrays(batch.stamps if self.channel_index else None, features)
        return pd.concat([out, pd.DataFrame(self._columns(outputs))], axis=1)

    def _work(self, chunk: Chunk) -> tuple[pd.DataFrame, list[Rejection]]:
        batch = chunk.decode(self.stamp_size)
        if self.context is not None:
            batch = add_context(batch, self.context)
        return self.score_batch(batch), batch.rejected

    def iter_scores(
        self, inputs: Iterable[str | Path], *, kind: str | None = None
    ) -> Iterator[tuple[pd.DataFrame, list[Rejection]]]:
        """(scores, rejections) of each chunk of the inputs, in input order."""
        chunks = iter_chunks(inputs, kind=kind, batch_size=self.batch_size)
        yield from self._map(chunks)

    def _map(self, chunks: Iterable[Chunk]) -> Iterator[tuple[pd.DataFrame, list[Rejection]]]:
        if self.workers == 1:
            for chunk in chunks:
                yield self._work(chunk)
            return
        pool = self._executor()
        work = self._work if self.backend == "thread" else _work_in_worker
        pending: deque[Future] = deque()

        def result() -> tuple[pd.DataFrame, list[Rejection]]:
            out = pending.popleft().result()
            if self.backend == "process":
                table, rejected, cpu = out
                self.worker_cpu_seconds += cpu
                return table, rejected
            return out

        for chunk in chunks:
            pending.append(pool.submit(work, chunk))
            if len(pending) >= 2 * self.workers:
                yield result()
        while pending:
            yield result()

    def score(self, batch: AlertBatch) -> pd.DataFrame:
        """Scores of an in-memory batch (split into chunks scored in parallel)."""
        if self.channel_index and batch.stamps.shape[-1] != self.stamp_size:
            raise ValueError(
                f"stamps are {batch.stamps.shape[-1]} px, the bundle expects {self.stamp_size}: "
                f"read the alerts with stamp_size=predictor.stamp_size"
            )
        parts = [
            _Decoded(
                AlertBatch(
                    batch.candidates.iloc[i : i + self.batch_size], batch.stamps[i : i + self.batch_size]
                )
            )
            for i in range(0, len(batch), self.batch_size)
        ]
        frames = [t for t, _ in self._map(parts)]
        if not frames:
            return self.score_batch(batch)
        table = pd.concat(frames, ignore_index=True)
        table["flag_duplicate_id"] = duplicate_ids(table["alert_id"].tolist(), set())  # across chunks
        return table

    def predict_to_parquet(
        self,
        inputs: Iterable[str | Path],
        out: str | Path,
        *,
        kind: str | None = None,
        progress: bool = False,
    ) -> PredictSummary:
        """Score every alert of ``inputs`` into ``out`` (Parquet), append-safe (see the module doc);
        ``progress`` shows a progress bar of alerts scored."""
        from filelock import FileLock

        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(out.with_name(out.name + ".lock"))
        try:
            lock.acquire(timeout=0)
        except TimeoutError:
            log.warning("%s: another process is writing these scores; waiting for it", out)
            lock.acquire()
        try:
            return self._predict_locked(inputs, out, kind=kind, progress=progress)
        finally:
            lock.release()

    def _predict_locked(
        self, inputs: Iterable[str | Path], out: Path, *, kind: str | None, progress: bool
    ) -> PredictSummary:
        import pyarrow.parquet as pq

        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # a merge killed before its rename
            stale.unlink()
        parts_dir = out.with_name(out.name + ".parts")
        parts_dir.mkdir(exist_ok=True)
        in_out = _scored_keys([out])
        for part in sorted(parts_dir.glob("part-*.parquet")):
            if _scored_keys([part]) <= in_out:  # merged by a run killed before it removed its parts
                part.unlink()
        done = _scored_keys([out, *sorted(parts_dir.glob("part-*.parquet"))])
        summary = PredictSummary(out)
        n_part = 1 + max((int(p.stem.split("-")[1]) for p in parts_dir.glob("part-*.parquet")), default=-1)
        with tqdm(unit="alert", desc=f"predict -> {out.name}", disable=not progress) as bar:
            self._score_into(inputs, kind, parts_dir, n_part, done, summary, bar)
        sources = [p for p in [out] if p.is_file()] + sorted(parts_dir.glob("part-*.parquet"))
        if sources:
            tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            writer = None
            try:
                for src in sources:
                    for rb in pq.ParquetFile(src).iter_batches(batch_size=65536):
                        if writer is None:
                            writer = pq.ParquetWriter(tmp, rb.schema)
                        writer.write_batch(rb.cast(writer.schema) if rb.schema != writer.schema else rb)
            finally:
                if writer is not None:
                    writer.close()
            os.replace(tmp, out)
        shutil.rmtree(parts_dir)
        if summary.rejected:
            _append_rejections(out.with_name(out.stem + ".rejected.csv"), summary.rejected)
            log.warning(
                "%d alerts rejected (reasons in %s)", len(summary.rejected), out.stem + ".rejected.csv"
            )
        return summary

    def _score_into(
        self,
        inputs: Iterable[str | Path],
        kind: str | None,
        parts_dir: Path,
        n_part: int,
        done: set[tuple[str, str]],
        summary: PredictSummary,
        bar: tqdm,
    ) -> None:
        """Score the chunks of ``inputs`` not yet ``done`` into parts ``parts_dir/part-<n_part>...``."""
        seen_ids = {a for _, a in done}
        for table, rejected in self.iter_scores(inputs, kind=kind):
            bar.update(len(table) + len(rejected))
            summary.rejected.extend(rejected)
            if done:
                seen = np.array(
                    [(s, a) in done for s, a in zip(table["source"], table["alert_id"], strict=True)], bool
                )
                summary.skipped_already_scored += int(seen.sum())
                table = table[~seen]
            if len(table) == 0:
                continue
            table = table.assign(flag_duplicate_id=duplicate_ids(table["alert_id"].tolist(), seen_ids))
            part = parts_dir / f"part-{n_part:06d}.parquet"
            _atomic_parquet(table, part)
            n_part += 1
            summary.scored += len(table)


_WORKER: Predictor | None = None


def _start_worker(bundle: str, batch_size: int, context: Any = None) -> None:
    """Worker-process initialiser: open the bundle once (it was verified by the parent)."""
    global _WORKER
    _WORKER = Predictor(
        bundle, workers=1, batch_size=batch_size, verify=False, backend="thread", context=context
    )


def _work_in_worker(chunk: Chunk) -> tuple[pd.DataFrame, list[Rejection], float]:
    start = time.process_time()
    table, rejected = _WORKER._work(chunk)
    return table, rejected, time.process_time() - start


@dataclass
class _Decoded(Chunk):
    """An already decoded batch as a chunk (stamps already at the bundle's size)."""

    batch: AlertBatch

    def decode(self, stamp_size: int) -> AlertBatch:
        return self.batch


def _scored_keys(paths: list[Path]) -> set[tuple[str, str]]:
    import pyarrow.parquet as pq

    keys: set[tuple[str, str]] = set()
    for p in paths:
        if p.is_file():
            t = pq.read_table(p, columns=["source", "alert_id"])
            keys.update(zip(t.column("source").to_pylist(), t.column("alert_id").to_pylist(), strict=True))
    return keys


def _atomic_parquet(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _append_rejections(path: Path, rejected: list[Rejection]) -> None:
    """Add rejections to the CSV (atomically); a rerun on the same inputs adds no row twice."""
    new = pd.DataFrame([{"alert_id": r.alert_id, "source": r.source, "reason": r.reason} for r in rejected])
    old = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else None
    table = pd.concat([old, new], ignore_index=True) if old is not None else new
    table = table.drop_duplicates(ignore_index=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
