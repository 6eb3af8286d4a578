"""Tasks that `python run.py task=NAME` and the `hybrid` command both run (one function each).

The top of the library: a task composes the layers below it and owns what a run needs beyond the
library functions -- its run directory, loggers (CSV, W&B), the choice of LightningModule (plain,
co-teaching or domain-adversarial), the cross-survey evaluation and the printed summary. Training
(:mod:`hybrid.training`) stays a library that knows nothing of noise handling or adapters.

The ``train`` task writes everything a run produces to its run directory (Hydra's output directory
under ``python run.py``, ``cfg.run_dir`` or ``outputs/<date>/<time>`` otherwise): ``config.yaml``
(resolved), ``checkpoints/`` (``best.ckpt``, ``last.ckpt``), ``metrics.json`` (written last and
atomically: it marks a finished run), ``predictions.parquet``, ``plots/``, and the W&B run (offline by
default) with the same config, metrics and plots. Started again in the same directory, a killed run
resumes from ``last.ckpt``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from hybrid.data.build import build_dataset
from hybrid.rundir import RunDir

if TYPE_CHECKING:  # torch and lightning are imported only when training
    from hybrid.models import HybridModel
    from hybrid.training.data import CandidateDataModule
    from hybrid.training.module import HybridModule

log = logging.getLogger(__name__)


def run_directory(cfg: DictConfig) -> Path:
    """Hydra's output directory when running under Hydra, else ``cfg.run_dir`` or a new timestamped one."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    return Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def lightning_module(cfg: DictConfig, dm: CandidateDataModule, model: HybridModel) -> HybridModule:
    """The LightningModule the config asks for: co-teaching (``coteaching``, a peer network trains
    alongside), domain-adversarial (``adapter.dann`` with targets) or a plain HybridModule."""
    from hybrid.adapters.stage import adapter_module
    from hybrid.training.module import HybridModule
    from hybrid.training.train import build_model, make_module

    module_class: type[HybridModule] = HybridModule
    extra: dict = {}
    if cfg.get("coteaching"):
        from hybrid.noise.coteaching import CoTeachingModule, resolve_forget_rate

        module_class = CoTeachingModule
        forget = resolve_forget_rate(
            cfg.coteaching.forget_rate,
            dm.splits["train"].table,
            per_class=cfg.coteaching.get("per_class", False),
        )
        extra.update(
            peer=build_model(cfg, dm), forget_rate=forget, forget_epochs=cfg.coteaching.forget_epochs
        )
    module_class, dann = adapter_module(cfg, dm, model, module_class)  # DANN, when adapter.dann
    extra.update(dann)
    return make_module(cfg, dm, model, module_class=module_class, **extra)


def _loggers(cfg: DictConfig, run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from hybrid.tracking.wandb_labels import wandb_labels

    loggers: list = [CSVLogger(run_dir, name="csv", version="")]
    w = cfg.logger.wandb
    if w.enabled:
        group, tags, name = wandb_labels(w)
        loggers.append(
            WandbLogger(
                project=w.project,
                group=group,
                tags=tags,
                name=name,
                save_dir=str(run_dir),
                mode=w.mode,
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def train(cfg: DictConfig) -> dict:
    """Build (or reuse) the dataset, train, evaluate on the test split; returns the test metrics."""
    import lightning as L
    import torch
    from lightning.pytorch.loggers import WandbLogger

    from hybrid.adapters.stage import adapt_dataset, cross_survey_metrics
    from hybrid.curation.human import chain, human_labels
    from hybrid.evaluation import evaluate
    from hybrid.noise.labels import label_pipeline
    from hybrid.training.train import (
        build_model,
        fit,
        make_datamodule,
        modality_checks,
        normalize_splits,
        score_split,
    )

    run = RunDir(run_directory(cfg))
    run.path.mkdir(parents=True, exist_ok=True)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    if cfg.train.skip_finished and run.finished(config_yaml):
        log.info("%s already finished with this config; not training again", run.path)
        return run.metrics()
    run.write_config(config_yaml)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_num_threads(int(cfg.train.threads) if cfg.train.threads else torch.get_num_threads())

    dataset = adapt_dataset(cfg, build_dataset(cfg))  # other surveys, harmonisation: adapter config
    labels = label_pipeline(cfg)  # label-noise injection and cleaning, when configured
    human = human_labels(cfg, dataset)  # curation=human: the vetting page's votes, before the noise step
    dm = make_datamodule(cfg, dataset, relabel=chain(human, labels))
    model = build_model(cfg, dm)
    normalize_splits(dm, model)
    loggers = _loggers(cfg, run.path)
    try:
        module = lightning_module(cfg, dm, model)
        module, epochs = fit(cfg, dm, model, run.path, module=module, loggers=loggers)
        scored = score_split(model, dm.splits["test"], rotation_average=cfg.preprocess.rotation_average)
        scored.to_parquet(run.path / "predictions.parquet", index=False)
        metrics = evaluate(scored, run.path, threshold=cfg.train.threshold)
        metrics.update(
            modality_checks(model, dm.splits["test"], rotation_average=cfg.preprocess.rotation_average)
        )
        metrics.update(
            {
                "modalities": "+".join(model.modalities),
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "epochs": epochs,
                "dataset": str(dataset),
                "n_train": len(dm.splits["train"]),
            }
        )
        if labels is not None:
            labels.write(run.path)
            metrics.update(labels.metrics())
        if human is not None:
            metrics.update(human.metrics())
        metrics.update(cross_survey_metrics(cfg, dm, module))  # other surveys, when adapter.targets
        run.write_metrics(metrics)  # last: its presence marks a finished run (train.skip_finished)
        for lg in loggers:
            lg.log_metrics({f"test/{k}": v for k, v in metrics.items() if isinstance(v, int | float)})
            if isinstance(lg, WandbLogger):
                for png in sorted((run.path / "plots").glob("*.png")):
                    lg.log_image(f"test/{png.stem}", [str(png)])
        _report(run.path, metrics, loggers)
        return metrics
    finally:
        for lg in loggers:
            if isinstance(lg, WandbLogger):
                import wandb

                wandb.finish()


def _report(run_dir: Path, metrics: dict, loggers: list) -> None:
    from lightning.pytorch.loggers import WandbLogger

    wandb_dir = next((lg.experiment.dir for lg in loggers if isinstance(lg, WandbLogger)), None)
    keys = ("auc", "fnr_at_1pct_fpr", "fpr_at_1pct_fnr", "ece", "type_macro_f1")
    summary = ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)
    print(f"\ntest metrics ({metrics['modalities']}): {summary}")
    print(f"run directory: {run_dir.resolve()}  (metrics.json, plots/, checkpoints/, predictions.parquet)")
    if wandb_dir:
        print(f"W&B run: {wandb_dir} (offline runs upload with `wandb sync {Path(wandb_dir).parent}`)")


TASKS: dict[str, Callable[[DictConfig], object]] = {
    "build_dataset": build_dataset,
    "train": train,
}


def run_task(cfg: DictConfig) -> object:
    """Run ``cfg.task``; with ``optimized_metric`` set, return that metric (what a sweeper such as
    Optuna optimises) instead of the task's whole result."""
    name = cfg.task.name
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    result = TASKS[name](cfg)
    metric = cfg.get("optimized_metric")
    if metric is None:
        return result
    if not isinstance(result, dict) or metric not in result:
        raise KeyError(f"optimized_metric={metric!r} is not among the results of task {name!r}")
    return float(result[metric])
