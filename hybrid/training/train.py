"""The `train` task: dataset -> HybridModel -> Lightning training -> test-split evaluation.

Everything a run produces goes to its run directory (Hydra's output directory under ``python run.py``,
``outputs/<date>/<time>`` otherwise): ``config.yaml`` (resolved), ``checkpoints/`` (``best.ckpt``,
``last.ckpt``), ``metrics.json``, ``predictions.parquet``, ``plots/``, and the W&B run (offline by
default) with the same config, metrics and plots. Started again in the same directory, a killed run
resumes from ``last.ckpt``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from hybrid.data.build import build_dataset
from hybrid.evaluation import evaluate
from hybrid.models import HybridModel
from hybrid.noise.labels import LabelPipeline, label_pipeline
from hybrid.taxonomy import TRANSIENT_TYPES
from hybrid.tracking.wandb_labels import wandb_labels
from hybrid.training.data import CandidateDataModule, SplitTensors
from hybrid.training.module import HybridModule

log = logging.getLogger(__name__)


def run_directory(cfg: DictConfig) -> Path:
    """Hydra's output directory when running under Hydra, else ``cfg.run_dir`` or a new timestamped one."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    return Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def make_model(cfg: DictConfig, *, in_chans: int, feature_names: list[str]) -> HybridModel:
    """The (untrained, unfitted) HybridModel of the config for the given stamp channels and features;
    :func:`build_model` fits it, export rebuilds a trained one from its run directory."""
    inputs = set(cfg.inputs)
    image_encoder = instantiate(cfg.image_encoder) if "image" in inputs else None
    tabular_encoder = instantiate(cfg.tabular_encoder) if "catalog" in inputs else None
    return HybridModel(
        in_chans=in_chans,
        n_features=len(feature_names),
        n_types=len(TRANSIENT_TYPES),
        image_encoder=image_encoder,
        tabular_encoder=tabular_encoder,
        fusion=instantiate(cfg.fusion),
        stamps=instantiate(cfg.preprocess.stamps),
        feature_names=list(feature_names),
        head_dropout=cfg.train.head_dropout,
    )


def build_model(cfg: DictConfig, dm: CandidateDataModule) -> HybridModel:
    """The HybridModel of the config, its feature statistics fitted on the training split."""
    model = make_model(cfg, in_chans=dm.in_chans, feature_names=dm.feature_names)
    if model.features is not None:
        model.features.fit(dm.splits["train"].features.numpy())
    return model


def normalize_splits(dm: CandidateDataModule, model: HybridModel) -> None:
    """Normalise every split's stamps once with the model's own normaliser (training feeds them with
    ``stamps_normalized=True``; flips and rotations commute with the normalisation)."""
    if model.image_encoder is not None:
        for split in dm.splits.values():
            split.normalize_stamps(model.stamps)


def model_features(cfg: DictConfig) -> list[str] | None:
    """The catalog features a model is trained on: ``train.features`` when set, else the features the
    survey's alerts carry at alert time (``survey.alert_features``), else (None) every dataset feature.

    Training a survey's model on its availability profile means nothing the real stream lacks is
    learned from the simulation, and the missing-value pattern is the stream's own.
    """
    if cfg.train.features is not None:
        return list(cfg.train.features)
    available = cfg.get("survey", {}).get("alert_features")
    return None if available is None else list(available)


def make_datamodule(
    cfg: DictConfig, dataset: Path, relabel: LabelPipeline | None = None
) -> CandidateDataModule:
    t = cfg.train
    return CandidateDataModule(
        dataset,
        features=model_features(cfg),
        channels=None if t.channels is None else list(t.channels),
        batch_size=t.batch_size,
        label_sources=None if t.label_sources is None else list(t.label_sources),
        seed=int(cfg.seed),
        relabel=relabel,
        max_train_rows=t.get("max_rows"),
    )


def split_inputs(
    model: torch.nn.Module, split: SplitTensors, batch_size: int
) -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """The split's (image, features) in row order, ``batch_size`` rows at a time, on the model's device
    (None for a modality the model does not use); puts the model in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    for i in range(0, len(split), batch_size):
        b = split.batch(torch.arange(i, min(i + batch_size, len(split))))
        image = None
        if model.image_encoder is not None:
            image = b["image"].to(device).contiguous(memory_format=torch.channels_last)
        features = b["features"].to(device) if model.tabular_encoder is not None else None
        yield image, features


@torch.no_grad()
def score_split(
    model: HybridModel, split: SplitTensors, *, rotation_average: bool, batch_size: int = 1024
) -> pd.DataFrame:
    """The split's candidate table with ``score`` (real-bogus probability) and ``p_<type>`` columns.

    The split's stamps are expected normalised (see :func:`normalize_splits`).
    """
    scores, probs = [], []
    for image, features in split_inputs(model, split, batch_size):
        rb, ty = model.predict(image, features, rotation_average=rotation_average, stamps_normalized=True)
        scores.append(rb.float().cpu())
        probs.append(ty.float().cpu())
    out = split.table.copy()
    out["score"] = torch.cat(scores).numpy()
    p = torch.cat(probs).numpy()
    for j, name in enumerate(TRANSIENT_TYPES):
        out[f"p_{name}"] = p[:, j]
    return out


def modality_checks(
    model: HybridModel, split: SplitTensors, *, rotation_average: bool, seed: int = 0
) -> dict[str, float]:
    """Test AUC with one input destroyed, so that each branch of a fused model is seen to count.

    ``auc_stamps_noise``: the (normalised) stamps replaced by unit Gaussian noise;
    ``auc_features_shuffled``: each feature column permuted across the test rows (Breiman 2001's
    permutation test, all features at once). A fused model whose AUC survives one of these does not
    use that input.
    """
    from sklearn.metrics import roc_auc_score

    labels = split.label_real.numpy()
    if labels.min() == labels.max():
        return {}
    g = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    if model.image_encoder is not None and model.tabular_encoder is not None:
        noisy = split.subset(torch.arange(len(split)))
        noisy.image = torch.randn(noisy.image.shape, generator=g)
        scored = score_split(model, noisy, rotation_average=rotation_average)
        out["auc_stamps_noise"] = float(roc_auc_score(labels, scored["score"]))
        shuffled = split.subset(torch.arange(len(split)))
        cols = [
            shuffled.features[torch.randperm(len(split), generator=g), j]
            for j in range(split.features.shape[1])
        ]
        shuffled.features = torch.stack(cols, dim=1)
        scored = score_split(model, shuffled, rotation_average=rotation_average)
        out["auc_features_shuffled"] = float(roc_auc_score(labels, scored["score"]))
    return out


def _loggers(cfg: DictConfig, run_dir: Path) -> list:
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


def make_module(cfg: DictConfig, dm: CandidateDataModule, model: HybridModel) -> HybridModule:
    """The LightningModule of the config for ``model``, class weights from ``dm``'s training split."""
    pos_weight, type_weights = dm.class_weights() if cfg.train.class_weighting == "balanced" else (1.0, None)
    kwargs = {"rb_loss": instantiate(cfg.loss)} if cfg.get("loss") else {}
    module_class: type[HybridModule] = HybridModule
    if cfg.get("coteaching"):  # co-teaching: a peer network trains alongside
        from hybrid.noise.coteaching import CoTeachingModule, resolve_forget_rate  # imports hybrid.training

        module_class = CoTeachingModule
        forget = resolve_forget_rate(
            cfg.coteaching.forget_rate,
            dm.splits["train"].table,
            per_class=cfg.coteaching.get("per_class", False),
        )
        kwargs.update(
            peer=build_model(cfg, dm), forget_rate=forget, forget_epochs=cfg.coteaching.forget_epochs
        )
    from hybrid.adapters.stage import adapter_module  # imports hybrid.training itself

    module_class, extra = adapter_module(cfg, dm, model, module_class)  # DANN, when adapter.dann
    kwargs.update(extra)
    return module_class(
        model,
        pos_weight=pos_weight,
        type_weights=type_weights,
        rb_weight=cfg.train.rb_weight,
        type_weight=cfg.train.type_weight,
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        augment=cfg.preprocess.augment,
        channels_last=cfg.train.channels_last,
        seed=int(cfg.seed),
        **kwargs,
    )


def fit(
    cfg: DictConfig,
    dm: CandidateDataModule,
    model: HybridModel,
    run_dir: Path,
    *,
    loggers: list | bool = False,
    validate: bool = True,
    **trainer_kwargs: object,
) -> tuple[HybridModule, int]:
    """Train ``model`` on ``dm`` (stamps normalised, see :func:`normalize_splits`); returns the module
    and the number of epochs run.

    With ``validate``, training stops early on ``val/loss``, checkpoints go to ``run_dir/checkpoints``
    (resumed from ``last.ckpt`` when ``train.resume``) and the best weights are loaded at the end.
    Without it, the model trains for ``trainer.max_epochs`` epochs with no validation and no
    checkpoints (pool-based active learning, where no labelled validation set exists).
    ``trainer_kwargs`` override the ``trainer`` config (``max_epochs``, ``enable_progress_bar``, ...).
    """
    module = make_module(cfg, dm, model)
    if not validate:
        trainer = instantiate(
            cfg.trainer,
            logger=loggers,
            default_root_dir=str(run_dir),
            limit_val_batches=0,
            enable_checkpointing=False,
            **trainer_kwargs,
        )
        trainer.fit(module, datamodule=dm)
        return module, int(trainer.current_epoch)
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(ckpt_dir, filename="best", monitor="val/loss", mode="min", save_last=True)
    callbacks = [best, EarlyStopping("val/loss", patience=cfg.train.patience, mode="min")]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers, default_root_dir=str(run_dir), **trainer_kwargs
    )
    last = ckpt_dir / "last.ckpt"
    resume = last if cfg.train.resume and last.exists() else None
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    best_path = best.best_model_path or str(last)
    state = torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    return module, int(trainer.current_epoch)


def train(cfg: DictConfig) -> dict:
    """Build (or reuse) the dataset, train, evaluate on the test split; returns the test metrics."""
    run_dir = run_directory(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    done = run_dir / "metrics.json"
    if cfg.train.skip_finished and done.exists() and (run_dir / "config.yaml").read_text() == config_yaml:
        log.info("%s already finished with this config; not training again", run_dir)
        return json.loads(done.read_text())
    (run_dir / "config.yaml").write_text(config_yaml)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_num_threads(int(cfg.train.threads) if cfg.train.threads else torch.get_num_threads())

    from hybrid.adapters.stage import adapt_dataset, cross_survey_metrics  # imports hybrid.training

    dataset = adapt_dataset(cfg, build_dataset(cfg))  # other surveys, harmonisation: adapter config
    labels = label_pipeline(cfg)  # label-noise injection and cleaning, when configured
    dm = make_datamodule(cfg, dataset, relabel=labels)
    model = build_model(cfg, dm)
    normalize_splits(dm, model)
    loggers = _loggers(cfg, run_dir)
    try:
        module, epochs = fit(cfg, dm, model, run_dir, loggers=loggers)
        scored = score_split(model, dm.splits["test"], rotation_average=cfg.preprocess.rotation_average)
        scored.to_parquet(run_dir / "predictions.parquet", index=False)
        metrics = evaluate(scored, run_dir, threshold=cfg.train.threshold)
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
            labels.write(run_dir)
            metrics.update(labels.metrics())
        metrics.update(cross_survey_metrics(cfg, dm, module))  # other surveys, when adapter.targets
        # written last and atomically: its presence marks a finished run (train.skip_finished)
        tmp = run_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2))
        tmp.replace(run_dir / "metrics.json")
        for lg in loggers:
            lg.log_metrics({f"test/{k}": v for k, v in metrics.items() if isinstance(v, int | float)})
            if isinstance(lg, WandbLogger):
                for png in sorted((run_dir / "plots").glob("*.png")):
                    lg.log_image(f"test/{png.stem}", [str(png)])
        _report(run_dir, metrics, loggers)
        return metrics
    finally:
        for lg in loggers:
            if isinstance(lg, WandbLogger):
                import wandb

                wandb.finish()


def _report(run_dir: Path, metrics: dict, loggers: list) -> None:
    wandb_dir = next((lg.experiment.dir for lg in loggers if isinstance(lg, WandbLogger)), None)
    keys = ("auc", "fnr_at_1pct_fpr", "fpr_at_1pct_fnr", "ece", "type_macro_f1")
    summary = ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)
    print(f"\ntest metrics ({metrics['modalities']}): {summary}")
    print(f"run directory: {run_dir.resolve()}  (metrics.json, plots/, checkpoints/, predictions.parquet)")
    if wandb_dir:
        print(f"W&B run: {wandb_dir} (offline runs upload with `wandb sync {Path(wandb_dir).parent}`)")
