"""Scoring with a bundle: real ZTF alerts end to end, bad alerts skipped, append-safe scores files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hybrid.cli import main
from hybrid.data.readers import read_alerts
from hybrid.export import ATOL, RTOL, ServingModel, load_run_model
from hybrid.serving import Predictor
from hybrid.taxonomy import TRANSIENT_TYPES
from tests.test_readers import AVRO, PARQUET, malformed_alerts, records


def test_real_ztf_alerts_are_scored_as_pytorch_scores_them(tiny_bundle: Path, tiny_run: Path) -> None:
    predictor = Predictor(tiny_bundle, workers=2, batch_size=4)
    batch = read_alerts(PARQUET, stamp_size=predictor.stamp_size)
    scores = predictor.score(batch)
    assert scores["alert_id"].tolist() == [str(r["candid"]) for r in records()]
    p = scores[[f"p_{t}" for t in TRANSIENT_TYPES]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert scores["score"].between(0, 1).all()
    # the same alerts through the PyTorch model of the run: raw stamps in ADU, features with gaps
    model, _, _ = load_run_model(tiny_run)
    features = batch.candidates[model.features.names].to_numpy(np.float32, copy=True)
    with torch.no_grad():
        want, _ = ServingModel(model)(torch.from_numpy(batch.stamps), torch.from_numpy(features))
    np.testing.assert_allclose(scores["score"], want.numpy(), rtol=RTOL, atol=ATOL)


def test_workers_and_batch_sizes_do_not_change_the_scores(tiny_bundle: Path) -> None:
    one = Predictor(tiny_bundle, workers=1, batch_size=256)
    a = pd.concat([t for t, _ in one.iter_scores([PARQUET, AVRO])], ignore_index=True)
    for backend in ("thread", "process"):
        with Predictor(one.bundle, workers=2, batch_size=2, backend=backend) as two:
            chunks = list(two.iter_scores([PARQUET, AVRO]))
        assert [len(t) for t, _ in chunks] == [2, 2, 2, 2, 2, 2]  # memory bounded by the chunk size
        pd.testing.assert_frame_equal(a, pd.concat([t for t, _ in chunks], ignore_index=True))


def test_predict_skips_bad_alerts_with_reasons_and_is_append_safe(tiny_bundle: Path, tmp_path: Path) -> None:
    bad, expect = malformed_alerts()
    mixed = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist(records() + bad), mixed)
    out = tmp_path / "scores.parquet"
    predictor = Predictor(tiny_bundle, batch_size=4)
    summary = predictor.predict_to_parquet([mixed], out)
    assert summary.scored == 8 and {r.alert_id for r in summary.rejected} == set(expect)
    rejected = pd.read_csv(tmp_path / "scores.rejected.csv", dtype=str)
    assert set(rejected["alert_id"]) == set(expect) and rejected["reason"].str.len().min() > 10
    first = pd.read_parquet(out)
    assert len(first) == 8 and not (tmp_path / "scores.parquet.parts").exists()

    # a killed run left one scored chunk behind; the next run keeps it, skips what is done, appends
    parts = tmp_path / "scores.parquet.parts"
    parts.mkdir()
    left = next(predictor.iter_scores([AVRO]))[0]
    left.to_parquet(parts / "part-000000.parquet", index=False)
    summary = predictor.predict_to_parquet([AVRO, mixed], out)
    assert summary.skipped_already_scored == len(left) + 8
    final = pd.read_parquet(out)
    assert len(final) == 8 + 6 and not final.duplicated(["source", "alert_id"]).any()
    pd.testing.assert_frame_equal(final.iloc[:8].reset_index(drop=True), first)

    # a run killed after writing scores.parquet but before removing its parts: no row twice
    parts.mkdir()
    final.iloc[8:].to_parquet(parts / "part-000003.parquet", index=False)
    predictor.predict_to_parquet([AVRO], out)
    again = pd.read_parquet(out)
    assert len(again) == len(final) and not again.duplicated(["source", "alert_id"]).any()


def test_predict_cli_writes_uncertainty_columns_when_the_bundle_has_them(
    ensemble_bundle: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "scores.parquet"
    assert main(["predict", str(ensemble_bundle), str(PARQUET), "--out", str(out), "--workers", "1"]) == 0
    assert "6 alerts scored, 0 rejected" in capsys.readouterr().out
    scores = pd.read_parquet(out)
    assert {"alert_id", "object_id", "score", "p_sn", "score_std"} <= set(scores.columns)
    assert (scores["score_std"] >= 0).all()


def test_missing_inputs_fail_with_the_file_named(tiny_bundle: Path, tmp_path: Path) -> None:
    from hybrid.data.readers import ReaderError

    with pytest.raises(ReaderError, match=r"nothing\.avro: no such file"):
        Predictor(tiny_bundle).predict_to_parquet([tmp_path / "nothing.avro"], tmp_path / "s.parquet")


@pytest.mark.slow
def test_bench_predict_writes_its_report(tmp_path: Path) -> None:
    from hybrid.bench import run_benchmark
    from hybrid.config import load_config

    md = run_benchmark("predict", load_config([]), out_dir=tmp_path, fields=1)
    result = json.loads((tmp_path / "bench_predict.json").read_text())
    assert md.read_text().startswith("# Prediction benchmark")
    assert result["end_to_end_alerts_per_s"]["default"]["alerts_per_s"] > 0
    assert set(result["model_step_alerts_per_s_batch_256"]) == {
        "default_onnxruntime",
        "braai_onnxruntime",
        "default_rotation_average_onnxruntime",
        "braai_eager_pytorch",
    }
