"""`hybrid bench stream`: alerts per second per core through Spark ``local[2]`` against ``hybrid predict``.

Input: real ZTF alerts (as for ``hybrid bench predict``: the 51 of fink-science 7.4.0 when fetched,
else the 6 of ``tests/fixtures/ztf_alerts``), repeated to ``256 * fields`` alerts (default 40 batches)
with unique ``candid`` s, in 8 Parquet files of Fink's layout (gzipped FITS cutouts, nested candidate).

Measured in one run, in interleaved rounds (median of ``ROUNDS``), after a warm-up of each:

* Spark: :func:`hybrid.serving.spark.stream_alerts` over the directory with ``once`` (Spark's
  ``availableNow`` trigger) into a new Parquet sink and checkpoint each round, in a ``local[2]``
  session started before the rounds (its start-up time is reported on its own): file source ->
  :func:`~hybrid.serving.spark.hybrid_udf` (Arrow batches to the executor's Python workers, decode,
  preprocess, onnxruntime) -> committed Parquet files;
* the baseline: :meth:`hybrid.serving.Predictor.predict_to_parquet` on the same 8 files (``hybrid
  predict``: 2 worker processes, batches of 256).

Alerts per second per core is the rate divided by the 2 cores both use. Each Spark round checks that
its sink holds every alert once with the bundle's ``model_version`` on every row.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from omegaconf import DictConfig

from hybrid.bench.predict import BATCH, _autogroup_nice, _default_bundles, alert_source, repeated_alerts
from hybrid.data.readers import read_alerts
from hybrid.export import load_bundle
from hybrid.serving import Predictor

ROUNDS = 3
FILES = 8
CORES = 2


def split_files(alerts: Path, out: Path, files: int = FILES) -> list[Path]:
    """``alerts`` as ``files`` Parquet files of about equal size (row groups of 256 alerts)."""
    out.mkdir(parents=True)
    table = pq.read_table(alerts)
    step = -(-table.num_rows // files)
    paths = []
    for i in range(files):
        path = out / f"alerts-{i:03d}.parquet"
        pq.write_table(table.slice(i * step, step), path, row_group_size=BATCH)
        paths.append(path)
    return paths


def spark_round(spark, bundle: Path, source: Path, sink: Path, n: int, version: str) -> float:
    """Alerts/s of one streaming run over ``source`` into a new ``sink``, checked for exactly once."""
    from hybrid.serving.spark import read_sink, run_stream, stream_alerts

    t0 = time.perf_counter()
    query = stream_alerts(bundle, source, sink, spark=spark, once=True, files_per_trigger=FILES)
    run_stream(query, report_every=0.5)
    seconds = time.perf_counter() - t0
    rows = read_sink(sink)
    if len(rows) != n or rows["alert_id"].nunique() != n or not (rows["model_version"] == version).all():
        raise RuntimeError(f"{sink}: {len(rows)} rows for {n} alerts, or a row without the model version")
    return n / seconds


def predict_round(predictor: Predictor, files: list[Path], out: Path, n: int) -> float:
    t0 = time.perf_counter()
    summary = predictor.predict_to_parquet(files, out)
    seconds = time.perf_counter() - t0
    if summary.scored != n:
        raise RuntimeError(f"scored {summary.scored} of {n} alerts: {summary}")
    return n / seconds


def run(cfg: DictConfig, *, out_dir: str | Path = "reports", fields: int | None = None) -> Path:
    """Write ``bench_stream.md`` and ``bench_stream.json``; ``fields`` batches of 256 alerts (40)."""
    from hybrid.serving.spark import local_session

    load_before = os.getloadavg()
    n = BATCH * (fields or 40)
    src, described = alert_source(cfg.paths.cache_dir)
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    spark = None
    try:
        files = split_files(repeated_alerts(src, n, work / "all.parquet"), work / "incoming")
        real = read_alerts(src)
        bundle, _, bundle_from = _default_bundles(cfg, work, (real.stamps[:8], real.candidates.iloc[:8]))
        version = load_bundle(bundle).version
        t0 = time.perf_counter()
        spark = local_session(f"local[{CORES}]", app="hybrid-bench-stream")
        startup = time.perf_counter() - t0
        rates: dict[str, list[float]] = {"spark_local_2": [], "hybrid_predict_2_workers": []}
        with Predictor(bundle, workers=CORES, batch_size=BATCH, backend="process") as predictor:
            spark_round(spark, bundle, work / "incoming", work / "sink-warm", n, version)
            predict_round(predictor, files, work / "warm.parquet", n)
            for i in range(ROUNDS):
                rates["spark_local_2"].append(
                    spark_round(spark, bundle, work / "incoming", work / f"sink-{i}", n, version)
                )
                rates["hybrid_predict_2_workers"].append(
                    predict_round(predictor, files, work / f"scores-{i}.parquet", n)
                )
    finally:
        if spark is not None:
            spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    import pyspark

    medians = {k: statistics.median(v) for k, v in rates.items()}
    per_core = {k: v / CORES for k, v in medians.items()}
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "pyspark": pyspark.__version__,
            "java": _java_version(),
            "niceness": os.nice(0),
            "autogroup_nice": _autogroup_nice(),
            "load_average_1_5_15_min_before": [round(x, 2) for x in load_before],
            "load_average_1_5_15_min_after": [round(x, 2) for x in load_after],
        },
        "alerts": {"source": described, "n": n, "files": FILES},
        "bundle": bundle_from,
        "spark_session_startup_s": startup,
        "alerts_per_s_runs": rates,
        "alerts_per_s_median": medians,
        "alerts_per_s_per_core_median": per_core,
        "spark_over_predict": medians["spark_local_2"] / medians["hybrid_predict_2_workers"],
        "goals": {
            "spark_ge_1000_per_s_per_core": per_core["spark_local_2"] >= 1000,
            "model_version_on_every_row": True,  # checked in every Spark round, else it raises
        },
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_stream.json").write_text(json.dumps(result, indent=2))
    (out / "bench_stream.md").write_text(_markdown(result))
    return out / "bench_stream.md"


def _java_version() -> str:
    import subprocess

    try:
        text = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    except OSError:
        return "not found"
    return text.splitlines()[0] if text else "unknown"


def _markdown(r: dict) -> str:
    m, med, core, runs = (
        r["machine"],
        r["alerts_per_s_median"],
        r["alerts_per_s_per_core_median"],
        r["alerts_per_s_runs"],
    )
    g = r["goals"]
    labels = {
        "spark_local_2": "Spark `local[2]` Structured Streaming (`hybrid stream --engine spark --once`)",
        "hybrid_predict_2_workers": "`hybrid predict` (2 worker processes)",
    }
    lines = [
        "# Streaming benchmark",
        "",
        f"Written by `hybrid bench stream`: {m['cpus']} CPUs, pyspark {m['pyspark']}, {m['java']}. "
        f"Load average (1, 5, 15 min) {m['load_average_1_5_15_min_before']} before and "
        f"{m['load_average_1_5_15_min_after']} after the run; other processes shared the CPU.",
        "",
        f"Input: {r['alerts']['n']:,} alerts cycling through {r['alerts']['source']}, in "
        f"{r['alerts']['files']} Parquet files of Fink's layout. Bundle: {r['bundle']}. "
        f"Rounds interleaved, {len(runs['spark_local_2'])} of each after a warm-up; the Spark session "
        f"started once before them ({r['spark_session_startup_s']:.1f} s, not counted).",
        "",
        "| engine | alerts/s (median) | alerts/s per core | runs |",
        "|---|---|---|---|",
        *(
            f"| {labels[k]} | {med[k]:,.0f} | {core[k]:,.0f} | {', '.join(f'{x:,.0f}' for x in runs[k])} |"
            for k in labels
        ),
        "",
        f"Spark / `hybrid predict`: {r['spark_over_predict']:.2f}. Each Spark round read its sink back "
        "through the `_spark_metadata` log: every alert once, each row with the bundle's `model_version`.",
        "",
        "## Goals",
        "",
        f"- Spark end to end >= 1,000 alerts/s per core: "
        f"{'met' if g['spark_ge_1000_per_s_per_core'] else 'not met'} ({core['spark_local_2']:,.0f}).",
        "- A model-version column in every output row: met.",
    ]
    return "\n".join(lines) + "\n"
