"""Spark: the Fink-style pandas_udf scores as `hybrid predict` does, and a killed streaming job, started
again, scores every alert exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybrid.export import load_bundle
from hybrid.serving import Predictor
from tests.test_readers import PARQUET, malformed_alerts, records

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java 17+ (apt-get install openjdk-17-jre-headless)", allow_module_level=True)
spark_module = pytest.importorskip("hybrid.serving.spark")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def spark():
    session = spark_module.local_session("local[2]")
    yield session
    session.stop()


def predicted(bundle: Path, inputs: list[Path], out: Path) -> pd.DataFrame:
    """`hybrid predict`'s scores of ``inputs``, indexed by alert id."""
    with Predictor(bundle, workers=1) as predictor:
        predictor.predict_to_parquet(inputs, out)
    return pd.read_parquet(out).set_index("alert_id")


def assert_scores_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Every score column of ``want`` equal in ``got`` (both indexed by alert id) within rtol 1e-5."""
    columns = [c for c in want.columns if c == "score" or c.startswith("p_")]
    assert columns and set(columns) <= set(got.columns)
    got = got.loc[want.index]
    for c in columns:
        np.testing.assert_allclose(got[c].to_numpy(np.float64), want[c].to_numpy(np.float64), rtol=1e-5)


def fink_module_frame(spark, bundle: Path, alerts):
    """The alerts scored as Fink runs a science module: the pandas_udf over the alert columns."""
    from pyspark.sql import functions as F

    score = spark_module.hybrid_udf(bundle)(*spark_module.ALERT_COLUMNS)
    return alerts.select(F.col("candid").cast("string").alias("alert_id"), score.alias("h")).select(
        "alert_id", "h.*"
    )


@pytest.mark.parametrize("engine", ["stream_job_map_in_arrow", "fink_pandas_udf"])
def test_udf_scores_equal_hybrid_predict_with_model_version_and_rejections(
    spark, tiny_bundle: Path, tmp_path: Path, engine: str
) -> None:
    bad, expect = malformed_alerts()
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist(records() + bad), mixed)
    want = predicted(tiny_bundle, [mixed], tmp_path / "scores.parquet")

    alerts = spark.read.parquet(str(mixed))
    frame = spark_module.scored_frame if engine == "stream_job_map_in_arrow" else fink_module_frame
    got = frame(spark, tiny_bundle, alerts).toPandas().set_index("alert_id")
    assert len(got) == len(records() + bad) and got.index.is_unique  # one row per alert
    assert_scores_equal(got, want)
    assert (got["model_version"] == load_bundle(tiny_bundle).version).all()
    rejected = got[got["rejected"].notna()]
    assert set(rejected.index) == set(expect) and rejected["score"].isna().all()
    for candid, reason in expect.items():
        assert rejected.loc[candid, "rejected"].startswith(reason)
    assert got.loc[want.index, "rejected"].isna().all()


def split_alerts(out: Path) -> list[str]:
    """The fixture alerts as one Parquet file each (the order Spark's file source reads them in)."""
    out.mkdir()
    table = pq.read_table(PARQUET)
    for i in range(table.num_rows):
        pq.write_table(table.slice(i, 1), out / f"alerts-{i:03d}.parquet")
    return [str(c) for c in table.column("candid").to_pylist()]


@pytest.mark.slow  # about a minute: two Spark jobs, one of them killed (CI runs it with -m slow)
def test_killed_streaming_job_restarts_and_scores_every_alert_exactly_once(
    spark, tiny_bundle: Path, tmp_path: Path
) -> None:
    source, sink = tmp_path / "incoming", tmp_path / "scores"
    ids = split_alerts(source)
    cmd = [sys.executable, "-m", "hybrid.cli", "stream", "--engine", "spark", str(tiny_bundle)]
    cmd += [str(source), "--out", str(sink), "--files-per-trigger", "1", "--master", "local[1]"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    job = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True)
    try:
        spark_module.wait_for_batches(sink / "_checkpoint", 1, timeout=300)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the JVM and its Python workers with it, mid-stream
        job.wait()
    before = spark_module.read_sink(sink)
    assert 1 <= len(before) < len(ids)  # killed part-way: some alerts scored, some not

    query = spark_module.stream_alerts(tiny_bundle, source, sink, spark=spark, once=True)
    spark_module.run_stream(query, report_every=1)
    after = spark_module.read_sink(sink)
    assert sorted(after["alert_id"]) == sorted(ids)  # every alert, once
    assert spark.read.parquet(str(sink)).count() == len(ids)  # Spark's own reading agrees
    pd.testing.assert_frame_equal(  # what was committed before the kill is kept as it was
        after.set_index("alert_id").loc[before["alert_id"]].reset_index(), before, check_like=True
    )
    want = predicted(tiny_bundle, [PARQUET], tmp_path / "predict.parquet")
    assert_scores_equal(after.set_index("alert_id"), want)
    assert after["model_version"].nunique() == 1 and after["rejected"].isna().all()


@pytest.mark.slow
def test_bench_stream_writes_its_report(tmp_path: Path) -> None:
    from hybrid.bench import run_benchmark
    from hybrid.cli import load_config

    md = run_benchmark("stream", load_config([]), out_dir=tmp_path, fields=1)
    result = json.loads((tmp_path / "bench_stream.json").read_text())
    assert md.read_text().startswith("# Streaming benchmark")
    assert set(result["alerts_per_s_median"]) == {"spark_local_2", "hybrid_predict_2_workers"}
    assert all(v > 0 for v in result["alerts_per_s_per_core_median"].values())
    spark_cpu = result["cpu_us_per_alert_median"]["spark_local_2"]
    assert spark_cpu["jvm"] > 0 and spark_cpu["python_workers"] > 0  # both sides of the exchange
    no_python = result["cpu_us_per_alert_median"]["spark_no_python"]
    assert no_python["python_workers"] < spark_cpu["python_workers"] / 10  # idle workers only
    stages = result["python_stages_cpu_us_per_alert_single_thread"]
    assert stages["gunzip"] > 0 and stages["model"] > 0
