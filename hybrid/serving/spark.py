"""Scoring ZTF alerts in Spark: a ``pandas_udf`` Fink science module and a Structured Streaming job.

Fink (Möller et al. 2021, MNRAS 501, 3272) runs on Spark Structured Streaming; its science modules are
``pandas_udf`` functions over alert columns, with the model loaded once per executor. :func:`hybrid_udf`
is such a module for an export bundle:

* inputs (:data:`ALERT_COLUMNS`, in this order): ``objectId`` (string), ``candid`` (long), ``candidate``
  (the ZTF candidate struct; the fields of :data:`hybrid.data.readers.ztf.USED` are read) and the
  gzipped FITS bytes ``cutoutScience.stampData``, ``cutoutTemplate.stampData``,
  ``cutoutDifference.stampData``;
* output: a struct per alert with ``score`` (probability of real), ``p_<type>`` per transient type,
  the bundle's further outputs (``score_std``, ``entropy``, ``mutual_info`` for uncertainty bundles),
  any quality columns the Predictor writes, ``model_version`` and ``rejected`` (why an alert was not
  scored, else null; its scores are then null).

The UDF decodes and scores with the code of ``hybrid predict`` (:mod:`hybrid.serving.stream`), so the
scores equal its scores. :func:`scored_frame` scores a DataFrame of alerts the faster way, with
``mapInArrow`` and :func:`score_arrow_batch` (the same reader and scoring function; no input rows
buffered in the JVM, no pandas conversion of the cutouts; ``hybrid bench stream`` measures where the
time goes). :func:`stream_alerts` is ``hybrid stream --engine spark``: a streaming query
over a directory of alert Parquet files (Fink's layout) into a Parquet sink, with a checkpoint, so a
killed job started again resumes where it stopped and scores every alert exactly once. Exactly once
holds for readers that follow the sink's ``_spark_metadata`` log (Spark itself, or
:func:`read_sink`); files of a micro-batch that was killed half-way are left in the directory
uncommitted, so do not read the sink as a plain Parquet directory while it may hold them.

Needs the ``[spark]`` extra (pyspark) and Java 17 or later.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from hybrid.data.readers.base import ID_COLUMNS
from hybrid.data.readers.ztf import CUTOUTS, USED, ZtfChunk, ZtfParquetReader
from hybrid.serving.stream import cached_predictor, output_dtypes, resolved, score_chunk

log = logging.getLogger(__name__)

#: the alert columns :func:`hybrid_udf` takes, in order (Fink's ZTF layout)
ALERT_COLUMNS = ("objectId", "candid", "candidate", *(f"{c}.stampData" for c in CUTOUTS.values()))


def score_alert_columns(
    bundle: str | Path,
    object_id: pd.Series,
    candid: pd.Series,
    candidate: pd.DataFrame,
    science: pd.Series,
    template: pd.Series,
    difference: pd.Series,
) -> pd.DataFrame:
    """The UDF's body: one row of :func:`output_dtypes`' columns per alert, in input order.

    The alerts become a :class:`~hybrid.data.readers.ztf.ZtfChunk` (as ``hybrid predict`` reads a
    Parquet file) and are scored by the executor's cached Predictor for ``bundle``.
    """
    predictor = cached_predictor(resolved(bundle))
    chunk = ZtfChunk(
        source="spark",
        object_id=[o if isinstance(o, str) else None for o in object_id],
        candid=[None if pd.isna(c) else int(c) for c in candid],
        candidate=candidate[[c for c in candidate.columns if c in USED]].reset_index(drop=True),
        cutouts={"sci": list(science), "ref": list(template), "diff": list(difference)},
    )
    rows = score_chunk(predictor, chunk)
    return rows.drop(columns=[c for c in ID_COLUMNS if c in rows])


def output_schema(bundle: str | Path):
    """The Spark struct type of :func:`hybrid_udf`'s output for ``bundle``."""
    from pyspark.sql import types as T

    def spark_type(dtype: Any) -> Any:
        kind = getattr(dtype, "kind", "O")  # pandas' string and object dtypes: "O"
        if kind == "f":
            return T.FloatType() if dtype.itemsize == 4 else T.DoubleType()
        return {"b": T.BooleanType(), "i": T.LongType(), "u": T.LongType()}.get(kind, T.StringType())

    dtypes = output_dtypes(cached_predictor(resolved(bundle)))
    return T.StructType([T.StructField(name, spark_type(d), True) for name, d in dtypes.items()])


def hybrid_udf(bundle: str | Path):
    """A ``pandas_udf`` scoring ZTF alerts with ``bundle`` (a Fink science module; see the module doc).

    The bundle must be readable at the same path on every executor (a shared file system, or the
    same path on each node); each executor's Python worker opens and verifies it once.

    Example::

        score = hybrid_udf("bundle/")
        df = df.withColumn("hybrid", score(*ALERT_COLUMNS)).select("objectId", "hybrid.*")
    """
    from pyspark.sql.functions import pandas_udf

    path = resolved(bundle)
    schema = output_schema(path)

    @pandas_udf(schema)
    def hybrid_score(
        object_id: pd.Series,
        candid: pd.Series,
        candidate: pd.DataFrame,
        science: pd.Series,
        template: pd.Series,
        difference: pd.Series,
    ) -> pd.DataFrame:
        return score_alert_columns(path, object_id, candid, candidate, science, template, difference)

    return hybrid_score


def local_session(master: str = "local[2]", *, app: str = "hybrid"):
    """A Spark session for this machine: no UI, Arrow batches of 1,024 alerts, this Python.

    Input splits keep Spark's default size (128 MB, about 3,000 ZTF alerts): Spark still splits a
    micro-batch of few files over the cores (it caps a split at the input's bytes per core), and
    fewer, larger tasks cost about 40 us of JVM and 30 us of Python CPU per alert less than 16 MB
    splits (measured with ``hybrid.bench.stream.spark_round``, interleaved).
    """
    from pyspark.sql import SparkSession

    # pyspark warns on every UDF under pandas 3; the UDF's columns are plain numbers, strings, bytes
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
    session = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "1024")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    return session


def scores_schema(bundle: str | Path):
    """The Spark struct type of :func:`scored_frame`'s rows: ``alert_id``, ``object_id`` and
    :func:`output_schema`'s fields."""
    from pyspark.sql import types as T

    ids = [T.StructField("alert_id", T.StringType(), True), T.StructField("object_id", T.StringType(), True)]
    return T.StructType(ids + list(output_schema(bundle).fields))


def score_arrow_batch(bundle: str, batch: Any, schema: Any) -> Any:
    """One Arrow record batch of alerts in Fink's layout -> its scores as a record batch of ``schema``.

    The batch becomes a chunk exactly as ``hybrid predict`` reads a Parquet batch
    (:meth:`~hybrid.data.readers.ztf.ZtfParquetReader.chunk_from_arrow`) and is scored by the
    executor's cached Predictor; ``alert_id`` is ``candid`` as text and ``object_id`` ``objectId``
    (both null where the alert lacks them).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = score_chunk(cached_predictor(bundle), ZtfParquetReader.chunk_from_arrow(batch, "spark"))
    scores = pa.RecordBatch.from_pandas(
        rows.drop(columns=[c for c in ID_COLUMNS if c in rows]), schema=pa.schema(list(schema)[2:])
    )
    ids = [pc.cast(batch.column("candid"), pa.string()), batch.column("objectId").cast(pa.string())]
    return pa.RecordBatch.from_arrays(ids + scores.columns, schema=schema)


def scored_frame(spark, bundle: str | Path, source: Any):
    """``source`` (a DataFrame of alerts in Fink's layout) as the scores table: ``alert_id``,
    ``object_id`` and :func:`hybrid_udf`'s columns.

    Scored with ``mapInArrow`` rather than the ``pandas_udf``: the alerts' Arrow batches go to the
    Python workers and the scores come back, with no copy of the input rows kept in the JVM to join
    the scores to (a scalar UDF's executor buffers every input row, cutouts included) and no pandas
    conversion of the cutouts; the scoring code is the same (``hybrid bench stream`` measures it).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    path = resolved(bundle)
    # only what the reader uses goes to Python (Spark then reads only those Parquet columns)
    fields = [f for f in source.schema["candidate"].dataType.names if f in USED]
    columns = [
        F.col("objectId"),
        F.col("candid"),
        F.struct(*(F.col(f"candidate.{f}") for f in fields)).alias("candidate"),
        *(F.struct(F.col(f"{c}.stampData").alias("stampData")).alias(c) for c in CUTOUTS.values()),
    ]
    schema = scores_schema(path)
    arrow = to_arrow_schema(schema)

    def score(batches):
        for batch in batches:
            yield score_arrow_batch(path, batch, arrow)

    return source.select(*columns).mapInArrow(score, schema)


def stream_alerts(
    bundle: str | Path,
    source_dir: str | Path,
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    spark: Any = None,
    files_per_trigger: int = 16,
    once: bool = False,
    trigger_seconds: float = 5.0,
):
    """Start the streaming query over the alert Parquet files in ``source_dir`` into ``out_dir``.

    Args:
        bundle: export bundle directory.
        source_dir: directory that alert Parquet files (Fink's ZTF layout) arrive in; files must be
            moved in whole (written elsewhere, then renamed), as for any Spark file source.
        out_dir: Parquet sink; its ``_spark_metadata`` log lists the committed files.
        checkpoint: the query's checkpoint (default ``out_dir/_checkpoint``). A query started again
            with the same checkpoint resumes after the last committed micro-batch.
        spark: a session (default :func:`local_session`).
        files_per_trigger: most new files per micro-batch.
        once: process the files present now (in micro-batches) and stop (Spark's ``availableNow``).
        trigger_seconds: interval between micro-batches when not ``once``.

    Returns:
        The running ``StreamingQuery``.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{source_dir}: no such directory of alert Parquet files")
    files = sorted(source_dir.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{source_dir}: no .parquet alert files yet (their schema is needed)")
    spark = spark or local_session()
    schema = spark.read.parquet(str(files[0])).schema
    missing = [c for c in ("objectId", "candid", "candidate", *CUTOUTS.values()) if c not in schema.names]
    if missing:
        raise ValueError(f"{files[0]}: not a ZTF alert file in Fink's layout; missing columns {missing}")
    alerts = (
        spark.readStream.schema(schema)
        .option("maxFilesPerTrigger", files_per_trigger)
        .option("pathGlobFilter", "*.parquet")
        .parquet(str(source_dir))
    )
    writer = (
        scored_frame(spark, bundle, alerts)
        .writeStream.format("parquet")
        .option("path", str(out_dir))
        .option("checkpointLocation", str(checkpoint or out_dir / "_checkpoint"))
        .queryName(f"hybrid-{out_dir.name}")
    )
    if once:
        return writer.trigger(availableNow=True).start()
    return writer.trigger(processingTime=f"{trigger_seconds} seconds").start()


def run_stream(query: Any, *, report_every: float = 10.0) -> int:
    """Wait for ``query`` (stopping it cleanly on Ctrl-C), logging each new micro-batch; the number
    of alerts it read."""
    seen, total = -1, 0
    try:
        while query.isActive:
            query.awaitTermination(report_every)
            for progress in query.recentProgress:
                if progress["batchId"] > seen:
                    seen = progress["batchId"]
                    total += int(progress["numInputRows"])
                    log.info("batch %d: %d alerts (%d in all)", seen, progress["numInputRows"], total)
    except KeyboardInterrupt:
        query.stop()
    if query.exception() is not None:
        raise RuntimeError(f"streaming query failed: {query.exception()}")
    return total


def committed_files(out_dir: str | Path) -> list[Path]:
    """The Parquet files of the sink that its ``_spark_metadata`` log lists as committed."""
    log_dir = Path(out_dir) / "_spark_metadata"
    if not log_dir.is_dir():
        return []
    batches = sorted(
        (p for p in log_dir.iterdir() if p.name.split(".")[0].isdigit() and not p.name.startswith(".")),
        key=lambda p: int(p.name.split(".")[0]),
    )
    compacts = [p for p in batches if p.name.endswith(".compact")]
    if compacts:  # a compact file holds every entry up to its batch
        last = int(compacts[-1].name.split(".")[0])
        batches = [compacts[-1]] + [p for p in batches if int(p.name.split(".")[0]) > last]
    files: dict[str, bool] = {}
    for p in batches:
        for line in p.read_text().splitlines()[1:]:  # the first line is the log's version
            entry = json.loads(line)
            files[entry["path"]] = entry["action"] != "delete"
    return [Path(unquote(urlparse(path).path)) for path, kept in files.items() if kept]


def read_sink(out_dir: str | Path) -> pd.DataFrame:
    """The scores committed to a streaming sink (exactly the committed micro-batches), as pandas."""
    files = committed_files(out_dir)
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def wait_for_batches(checkpoint: str | Path, n: int, *, timeout: float = 120.0) -> None:
    """Block until the query with ``checkpoint`` has committed ``n`` micro-batches (for tests and
    scripts that stop a query from outside)."""
    commits = Path(checkpoint) / "commits"
    start = time.monotonic()
    while len(list(commits.glob("[0-9]*"))) < n:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{checkpoint}: fewer than {n} micro-batches committed in {timeout:.0f} s")
        time.sleep(0.05)
