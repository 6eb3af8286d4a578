"""Training as a library: the model of a config, its data module, :func:`fit` and :func:`score_split`.

Not for: orchestrating a run (run directory, loggers, co-teaching or DANN, the report); that is the
``train`` task of :mod:`hybrid.tasks`, which calls these functions. Nothing here imports a layer above
training (noise handling, adapters, tasks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from hybrid.curation.human import Relabel
from hybrid.models import HybridModel
from hybrid.noise.labels import LabelPipeline
from hybrid.taxonomy import TRANSIENT_TYPES
from hybrid.training.data import CandidateDataModule, SplitTensors
from hybrid.training.module import HybridModule

log = logging.getLogger(__name__)


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
    cfg: DictConfig, dataset: Path, relabel: LabelPipeline | Relabel | None = None
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


def make_module(
    cfg: DictConfig,
    dm: CandidateDataModule,
    model: HybridModel,
    *,
    module_class: type[HybridModule] = HybridModule,
    **extra: object,
) -> HybridModule:
    """The LightningModule of the config for ``model``, class weights from ``dm``'s training split.

    ``module_class`` and ``extra`` (its arguments beyond the HybridModule's) are what the run's
    noise handling or adapter chose (see :func:`hybrid.tasks.lightning_module`); the loss is the
    config's ``loss`` group when set.
    """
    pos_weight, type_weights = dm.class_weights() if cfg.train.class_weighting == "balanced" else (1.0, None)
    kwargs = {"rb_loss": instantiate(cfg.loss)} if cfg.get("loss") else {}
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
    module: HybridModule | None = None,
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
    ``module`` is the LightningModule wrapping ``model`` (default: :func:`make_module`, a plain
    HybridModule; the ``train`` task passes the co-teaching or DANN module its config asks for).
    ``trainer_kwargs`` override the ``trainer`` config (``max_epochs``, ``enable_progress_bar``, ...).
    """
    if module is None:
        if cfg.get("coteaching") or OmegaConf.select(cfg, "adapter.dann"):
            raise ValueError(
                "the config asks for co-teaching or DANN: pass module=hybrid.tasks.lightning_module(cfg, dm, "
                "model) to fit()"
            )
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
