"""The seams with one owner each: dataset -> model inputs, the run directory, atomic writes, robust
sigma and Markdown tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from hybrid.data.dataset import DatasetError, select_inputs, write_dataset
from hybrid.io import atomic_write, write_text_atomic
from hybrid.markdown import markdown_table
from hybrid.rundir import RunDir, RunDirError
from hybrid.stats import MAD_TO_SIGMA, mad_sigma


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "split": ["train", "val", "test", "test", "train"],
            "label_real": [1.0, 0.0, 1.0, 0.0, 1.0],
            "label_type": ["bogus"] * 5,
            "fwhm": rng.normal(2.0, 0.1, 5),
            "snr": rng.normal(10.0, 1.0, 5),
        }
    )
    stamps = rng.normal(size=(5, 3, 7, 7)).astype(np.float32)
    meta = {"channels": ["sci", "ref", "diff"], "features": {"fwhm": "arcsec", "snr": ""}}
    return write_dataset(tmp_path / "ds", table, stamps, meta)


def test_select_inputs_defaults_to_every_feature_and_channel(dataset: Path) -> None:
    inputs = select_inputs(dataset)
    assert inputs.features == ["fwhm", "snr"]
    assert inputs.channels == ["sci", "ref", "diff"] and inputs.channel_index == [0, 1, 2]
    assert len(inputs.table) == 5 and inputs.imputed == []


def test_select_inputs_orders_channels_and_keeps_one_split(dataset: Path) -> None:
    inputs = select_inputs(dataset, features=["snr"], channels=["diff", "sci"], split="test")
    assert inputs.channel_index == [2, 0]
    assert list(inputs.table.index) == [2, 3]  # rows of the dataset, for the stamps
    assert select_inputs(dataset, features=[], channels=[]).channel_index == []


def test_select_inputs_errors_name_the_file_and_the_field(dataset: Path) -> None:
    with pytest.raises(DatasetError, match=r"candidates\.parquet: missing feature columns \['mag'\]"):
        select_inputs(dataset, features=["snr", "mag"])
    with pytest.raises(DatasetError, match=r"meta\.json: field 'channels' lacks \['score'\]"):
        select_inputs(dataset, channels=["score"])
    with pytest.raises(ValueError, match="impute must be one of"):
        select_inputs(dataset, impute="zero")


def test_select_inputs_imputes_missing_features_as_nan_when_asked(dataset: Path) -> None:
    inputs = select_inputs(dataset, features=["mag", "snr"], impute="nan")
    assert inputs.imputed == ["mag"]
    assert inputs.table["mag"].isna().all() and inputs.table["snr"].notna().all()


def test_run_dir_marks_finished_runs_by_their_metrics_and_config(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert not run.finished()
    cfg = OmegaConf.create({"seed": 1, "train": {"features": None}})
    run.write_config(cfg)
    assert not run.finished()
    run.write_metrics({"auc": 0.9, "dataset": str(tmp_path)})
    assert run.finished() and run.finished(OmegaConf.to_yaml(cfg, resolve=True))
    assert not run.finished("seed: 2\n")
    assert run.metrics()["auc"] == 0.9
    assert run.dataset() == tmp_path  # the recorded dataset wins over the config's
    assert list(run.config().inputs) == []  # old configs get their inputs


def test_run_dir_errors_name_what_is_missing(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with pytest.raises(RunDirError, match=r"config\.yaml: missing"):
        run.config()
    with pytest.raises(RunDirError, match=r"metrics\.json: missing"):
        run.metrics()
    with pytest.raises(RunDirError, match=r"no best\.ckpt or last\.ckpt"):
        run.checkpoint()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run.checkpoint("best").name == "last.ckpt"


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "a" / "metrics.json", json.dumps({"auc": 1}))

    def broken(tmp: Path) -> None:
        tmp.write_text("{half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"auc": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temporary left
    with pytest.raises(FileExistsError):
        atomic_write(path, broken, overwrite=False)


def test_mad_sigma_is_the_standard_deviation_of_a_gaussian_and_ignores_outliers() -> None:
    x = np.random.default_rng(1).normal(3.0, 2.0, (4, 200_000))
    x[:, :1000] = 1e6  # 0.5% wild values
    assert mad_sigma(x[0]) == pytest.approx(2.0, rel=0.02)
    np.testing.assert_allclose(mad_sigma(x, axis=1), 2.0, rtol=0.02)
    assert 1 / MAD_TO_SIGMA == pytest.approx(0.6744897501960817)  # Phi^-1(3/4)


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, ""]]) == [
        "| a | b |",
        "|---|---|",
        "| 1 | x |",
        "| 2.5 |  |",
    ]
