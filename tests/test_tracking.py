"""Sweeps, W&B grouping, `hybrid compare` and ablation study specs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hybrid.cli import main
from hybrid.tracking import compare, find_runs, flatten, load_study, write_report
from hybrid.tracking.compare import lower_is_better, varying_keys
from tests.conftest import CONF
from tests.test_training import TINY

ROOT = CONF.parent
EXPERIMENTS = ROOT / "experiments"


def _fake_run(root: Path, name: str, config: dict, metrics: dict, choices: dict | None = None) -> Path:
    """A finished run directory in the format the training task writes (config.yaml, metrics.json,
    Hydra's .hydra/ files, predictions.parquet)."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "metrics.json").write_text(json.dumps(metrics))
    hydra = {"hydra": {"runtime": {"choices": {"hydra/launcher": "basic", **(choices or {})}}}}
    (d / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={config['seed']}"]))
    rng = np.random.default_rng(config["seed"])
    y = rng.random(200) < 0.3
    pd.DataFrame({"truth_real": y, "score": np.clip(y * 0.6 + rng.random(200) * 0.5, 0, 1)}).to_parquet(
        d / "predictions.parquet"
    )
    return d


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    job = 0
    for fusion, base in (("gated", 0.95), ("concat", 0.90)):
        for seed in (0, 1, 2):
            config = {"seed": seed, "fusion": {"_target_": f"x.{fusion}", "dim": 16}, "train": {"lr": 0.01}}
            metrics = {"auc": base + 0.01 * seed, "fnr_at_1pct_fpr": 0.2 - base / 10 + 0.001 * seed}
            _fake_run(root, str(job), config, metrics, {"fusion": fusion, "modality": "fused"})
            job += 1
    (root / "6").mkdir()
    (root / "6" / "config.yaml").write_text("seed: 3\n")  # a run that never finished
    return root


def test_compare_groups_over_seeds_and_sorts_best_first(sweep: Path, tmp_path: Path) -> None:
    runs, unfinished = find_runs([sweep])
    assert len(runs) == 6 and unfinished == [sweep / "6"]
    assert varying_keys(runs) == ["fusion"]  # the choice explains fusion._target_; seeds are grouped
    result = compare(runs, metrics=["auc", "fnr_at_1pct_fpr"], sort="fnr_at_1pct_fpr")
    t = result.table
    assert list(t["fusion"]) == ["gated", "concat"] and list(t["n"]) == [3, 3]
    assert t.loc[0, "auc_mean"] == pytest.approx(0.96)
    assert t.loc[0, "auc_std"] == pytest.approx(np.std([0.95, 0.96, 0.97], ddof=1))
    assert "**0.9600 ± 0.0100**" in result.markdown()
    md = write_report(result, tmp_path / "reports" / "fusion", x="fusion")
    assert md.read_text().count("| gated | 3 |") == 1
    for name in ("fusion.csv", "fusion_fusion.png", "fusion_roc.png"):
        assert (tmp_path / "reports" / name).stat().st_size > 0


def test_compare_command_prints_and_writes(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["compare", str(sweep), "--keys", "fusion", "train.lr", "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "| fusion | train.lr | seeds | auc |" in out and (tmp_path / "t.md").exists()
    # bad input ends in one line naming it, exit status 2 (no traceback)
    assert main(["compare", str(sweep), "--sort", "nll"]) == 2
    assert "sort metric 'nll'" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "no such run" in capsys.readouterr().err


def test_metric_directions_and_flatten() -> None:
    assert lower_is_better("fnr_at_1pct_fpr") and lower_is_better("ece") and not lower_is_better("auc")
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": "[1, 2]", "d": "{}"}


SWEEP_SPECS = sorted(
    p for p in EXPERIMENTS.glob("*.yaml") if "sweep" in (yaml.safe_load(p.read_text()) or {})
)


@pytest.mark.parametrize("spec", SWEEP_SPECS, ids=lambda p: p.stem)
def test_study_specs_name_existing_experiments(spec: Path) -> None:
    study = load_study(spec)
    assert study.name == spec.stem and study.seeds
    for override in study.sweep:
        key, _, value = override.partition("=")
        if key == "experiment":
            assert (CONF / "experiment" / f"{value}.yaml").exists()


def test_study_spec_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsweep: [experiment=smoke]\ncompare: {keyz: [a]}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown field\(s\) compare"):
        load_study(bad)
    bad.write_text("name: x\n")
    with pytest.raises(ValueError, match="missing field 'sweep'"):
        load_study(bad)


def _multirun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    # fusion.dim=32: every fusion (cross-attention splits it into 8 tokens of 4 heads) can be chosen
    tiny = [o for o in TINY if not o.startswith("fusion.dim")]
    overrides = [*tiny, "fusion.dim=32", "trainer.max_epochs=1", f"paths.cache_dir={tmp_path / 'cache'}"]
    return subprocess.run(
        [sys.executable, "run.py", "-m", *args, *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_two_job_multirun_makes_two_runs_grouped_in_wandb(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "multirun"
    proc = _multirun(tmp_path, "experiment=smoke", "seed=0,1", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs, unfinished = find_runs([sweep_dir])
    assert len(runs) == 2 and not unfinished
    assert sorted(r.config["seed"] for r in runs) == [0, 1]
    for job in ("0", "1"):
        assert {"auc", "fnr_at_1pct_fpr"} <= set(json.loads((sweep_dir / job / "metrics.json").read_text()))
        (wandb_run,) = (sweep_dir / job / "wandb").glob("offline-run-*")
        log = next(wandb_run.glob("*.wandb")).read_bytes()
        assert str(sweep_dir).encode() in log  # the W&B group is the sweep
        assert f"seed={job}".encode() in log  # tagged with the job's overrides
    table = compare(runs).table
    assert len(table) == 1 and table.loc[0, "n"] == 2  # only the seed differs: one group of two


@pytest.mark.slow
def test_modalities_ablation_multirun_and_compare(tmp_path: Path) -> None:
    """The issue's acceptance: the modalities ablation over 3 seeds on a small dataset, compared."""
    sweep_dir = tmp_path / "multirun"
    proc = _multirun(tmp_path, "experiment=ablation_modalities", "seed=0,1,2", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = compare(find_runs([sweep_dir])[0], keys=["modality"])
    assert sorted(result.table["modality"]) == ["catalog_only", "fused", "image_only"]
    assert set(result.table["n"]) == {3}


@pytest.mark.slow
def test_optuna_sweep_optimises_the_named_metric(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "optuna"
    proc = _multirun(
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and "best_value" in best
    values = [json.loads(p.read_text())["fnr_at_1pct_fpr"] for p in sweep_dir.glob("*/metrics.json")]
    assert best["best_value"] == pytest.approx(min(values))


@pytest.mark.parametrize(
    "override", ["hparams_search=optuna", "hydra/launcher=slurm", "hydra/launcher=local_parallel"]
)
def test_sweeper_and_launcher_configs_compose_and_instantiate(override: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[override], return_hydra_config=True)
    part = cfg.hydra.sweeper if override.startswith("hparams") else cfg.hydra.launcher
    assert instantiate(part) is not None
    if override.startswith("hparams"):
        assert cfg.optimized_metric == "fnr_at_1pct_fpr" and cfg.hydra.sweeper.direction == "minimize"
