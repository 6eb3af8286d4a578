"""Scoring alert streams batch by batch: one output row per input alert, stamped with the model version.

The engines that run on brokers' streams (:mod:`hybrid.serving.spark` for Spark, as Fink runs its
science modules; :mod:`hybrid.serving.kafka` for Kafka consumers, as BOOM/Babamul run theirs) hand
over batches of raw alerts and need exactly one answer per alert, in input order, including for the
alerts that cannot be scored. This module is that adapter over :class:`~hybrid.serving.Predictor`: the
same decoding, preprocessing and ONNX graph as ``hybrid predict``, so the scores are the same.

Every row carries ``model_version`` (:attr:`hybrid.export.Bundle.version`: a digest of the bundle's
files, so two copies of one bundle give the same version and a retrained or altered bundle a new one) and
``rejected`` (the reason an alert was not scored, else null). Not for files: ``hybrid predict``
(:meth:`~hybrid.serving.Predictor.predict_to_parquet`) scores Parquet and avro files append-safely.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from hybrid.data.readers import AlertBatch, Chunk, framework_features
from hybrid.data.readers.base import ID_COLUMNS
from hybrid.detection.candidates import CHANNELS
from hybrid.serving.predictor import Predictor

#: columns every stream row has besides the ids and the bundle's outputs
STREAM_COLUMNS = ("model_version", "rejected")


@lru_cache(maxsize=4)
def cached_predictor(bundle: str) -> Predictor:
    """A single-threaded Predictor for the bundle at ``bundle`` (a resolved path), opened and verified
    (checksums, golden pair) once per process: Spark reuses its Python workers across tasks, so the
    model is loaded once per executor core, not once per batch."""
    return Predictor(bundle, workers=1)


def rows_in_input_order(predictor: Predictor, batch: AlertBatch) -> pd.DataFrame:
    """One row per alert of the chunk ``batch`` was decoded from, in input order.

    Scored alerts have the columns of :meth:`Predictor.score_batch` (ids, ``score``, ``p_<type>``,
    any further outputs of the bundle); rejected ones keep ``alert_id`` and ``source`` and have null
    scores. ``model_version`` and ``rejected`` (the reason, else None) are added to every row.
    """
    if batch.rows is None:
        raise ValueError("the batch has no input positions (AlertBatch.rows); decode it from one chunk")
    scored = predictor.score_batch(batch)
    n = len(batch.rows) + len(batch.rejected)
    out = scored.set_axis(batch.rows).reindex(range(n))
    failed = np.setdiff1d(np.arange(n), batch.rows)  # in input order, as the reader lists rejections
    out["rejected"] = pd.Series([None] * n, dtype=object)
    if len(failed):
        out.loc[failed, "alert_id"] = [r.alert_id for r in batch.rejected]
        out.loc[failed, "source"] = [r.source for r in batch.rejected]
        out.loc[failed, "rejected"] = [r.reason for r in batch.rejected]
    out["model_version"] = predictor.bundle.version
    return out.reset_index(drop=True)


def score_chunk(predictor: Predictor, chunk: Chunk) -> pd.DataFrame:
    """Decode a chunk of raw alerts and score it: :func:`rows_in_input_order` of its batch."""
    return rows_in_input_order(predictor, chunk.decode(predictor.stamp_size))


def output_dtypes(predictor: Predictor) -> dict[str, np.dtype]:
    """The columns a stream row has beyond :data:`~hybrid.data.readers.base.ID_COLUMNS`, with dtypes.

    Found by scoring one synthetic alert (unit stamps, missing features), so it follows whatever the
    Predictor writes for this bundle (extra outputs such as ``score_std``, quality flags).
    """
    size = predictor.stamp_size
    ids = {"alert_id": "0", "object_id": "0", "survey": "", "band": "", "ra": 0.0, "dec": 0.0, "mjd": 0.0}
    table = pd.DataFrame({**ids, "source": "", **dict.fromkeys(framework_features(), np.nan)}, index=[0])
    batch = AlertBatch(table, np.ones((1, len(CHANNELS), size, size), np.float32), [], np.arange(1))
    rows = rows_in_input_order(predictor, batch)
    return {c: rows[c].dtype for c in rows.columns if c not in ID_COLUMNS}


def resolved(bundle: str | Path) -> str:
    """The bundle's absolute path (the key of :func:`cached_predictor` on every worker)."""
    return str(Path(bundle).resolve())
