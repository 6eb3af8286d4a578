"""Training end to end on a tiny dataset, and resuming a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hybrid.config import load_config
from hybrid.data.build import build_dataset
from hybrid.tasks import train

TINY = [
    "sim.shape=[512,512]",
    "sim.epochs_per_field=2",
    "data.n_fields=10",
    "data.workers=1",
    "data.progress=false",
    "data.stamp_size=31",
    "preprocess.stamps.crop=null",
    "image_encoder.widths=[8,16]",
    "tabular_encoder.hidden=[16]",
    "fusion.dim=16",
    "train.batch_size=64",
    "trainer.max_epochs=3",
    "trainer.enable_progress_bar=false",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    build_dataset(load_config([*TINY, f"paths.cache_dir={path}"]))
    return path


def test_fast_dev_run_trains_and_evaluates_end_to_end(cache: Path, tmp_path: Path) -> None:
    cfg = load_config(
        [*TINY, f"paths.cache_dir={cache}", f"run_dir={tmp_path}", "preprocess.rotation_average=false"]
    )
    metrics = train(cfg)
    assert 0.5 < metrics["auc"] <= 1.0
    assert metrics["modalities"] == "image+tabular"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["auc"] == metrics["auc"] and "fnr_at_1pct_fpr" in saved and "type_macro_f1" in saved
    for plot in ("roc", "score_histograms", "completeness", "reliability", "confusion"):
        assert (tmp_path / "plots" / f"{plot}.png").stat().st_size > 1000
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "predictions.parquet").exists()
    # the feature statistics travel in the checkpoint
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert "model.features.center" in state and "model.features.scale" in state


@pytest.mark.parametrize(("modality", "built"), [("catalog_only", "tabular"), ("image_only", "image")])
def test_single_modality_models_train(cache: Path, tmp_path: Path, modality: str, built: str) -> None:
    # the encoder overrides of TINY still apply: the modality decides which encoders are built
    cfg = load_config(
        [
            *TINY,
            f"modality={modality}",
            "trainer.max_epochs=1",
            f"paths.cache_dir={cache}",
            f"run_dir={tmp_path}",
        ]
    )
    assert train(cfg)["modalities"] == built


def _train_command(cache: Path, run_dir: Path) -> list[str]:
    overrides = [*TINY, "trainer.max_epochs=4", f"paths.cache_dir={cache}", f"run_dir={run_dir}"]
    code = (
        "import sys; from hybrid.config import load_config; from hybrid.tasks import train; "
        "train(load_config(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code, *overrides]


def test_resume_after_kill_gives_the_same_weights(cache: Path, tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    whole = tmp_path / "whole"
    subprocess.run(_train_command(cache, whole), check=True, capture_output=True, timeout=600, env=env)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_command(cache, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and not last.exists():
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists() and not (killed / "metrics.json").exists(), "the run was not killed mid-training"
    epoch_at_kill = torch.load(last, weights_only=False)["epoch"]
    assert epoch_at_kill < 3

    subprocess.run(_train_command(cache, killed), check=True, capture_output=True, timeout=600, env=env)
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["epoch"] == b["epoch"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (Path(__file__).parent.parent / "conf/experiment").glob("*.yaml"))
)
def test_every_experiment_runs_end_to_end(name: str, tmp_path: Path) -> None:
    """A fast-dev-run of each experiment: its own groups, on tiny data, on the CPU."""
    shrink = [
        "sim.shape=[384,384]",
        "data.n_fields=4",
        "data.workers=1",
        "data.progress=false",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger.wandb.enabled=false",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"run_dir={tmp_path / 'run'}",
    ]
    cfg = load_config([f"experiment={name}", *shrink])
    if cfg.task.name == "train":
        assert 0.0 <= train(cfg)["auc"] <= 1.0
    else:
        assert (build_dataset(cfg) / "meta.json").exists()
