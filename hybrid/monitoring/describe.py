"""What a model sees of a set of candidates, for the monitors: scores, features and embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hybrid.data.dataset import read_dataset, select_inputs
from hybrid.detection import FEATURE_UNITS
from hybrid.models import HybridModel
from hybrid.monitoring.detectors import MonitorSample
from hybrid.rundir import RunDir
from hybrid.training.data import SplitTensors
from hybrid.training.train import score_split, split_inputs


@torch.no_grad()
def embed_split(model: HybridModel, split: SplitTensors, batch_size: int = 1024) -> np.ndarray | None:
    """Image-encoder embeddings (N, D) of a split with normalised stamps; None for a model without
    an image encoder."""
    if model.image_encoder is None:
        return None
    out = [model.image_encoder(image).float().cpu() for image, _ in split_inputs(model, split, batch_size)]
    return torch.cat(out).numpy()


def exposure_groups(table: pd.DataFrame) -> np.ndarray | None:
    """The exposure of each candidate (``field/epoch``), or None when the table does not say."""
    if {"field", "epoch"} <= set(table.columns):
        return (table["field"].astype(str) + "/" + table["epoch"].astype(str)).to_numpy()
    return None


def describe_split(model: HybridModel, split: SplitTensors, feature_names: list[str]) -> MonitorSample:
    """Scores (no test-time augmentation), features, embeddings and exposures of a split with
    normalised stamps."""
    scored = score_split(model, split, rotation_average=False)
    return MonitorSample(
        scores=scored["score"].to_numpy(float),
        features=split.table[feature_names].reset_index(drop=True),
        embeddings=embed_split(model, split),
        groups=exposure_groups(split.table),
    )


def load_sample(
    path: str | Path, *, run_dir: str | Path | None = None, split: str | None = None
) -> MonitorSample:
    """A :class:`MonitorSample` of a dataset directory (features; with ``run_dir``, also the model's
    scores and embeddings) or of a candidate table in Parquet (its feature columns and, when present,
    its ``score`` column, e.g. a run's ``predictions.parquet``). ``split`` keeps one split only.

    The features of a table are its numeric detection features
    (:data:`hybrid.detection.FEATURE_UNITS`) and context features (``ctx_*``); ids, positions,
    times, labels and truth are left out, since they differ between any two samples."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"{path}: expected a dataset directory or a .parquet candidate table")
        table = pd.read_parquet(path)
        if split is not None:
            table = table[table["split"] == split]
        scores = table["score"].to_numpy(float) if "score" in table else None
        numeric = table.select_dtypes("number").columns
        names = [c for c in numeric if c in FEATURE_UNITS or c.startswith("ctx_")]
        features = table[names].reset_index(drop=True) if names else None  # e.g. `hybrid predict` output
        return MonitorSample(scores=scores, features=features, groups=exposure_groups(table))
    if run_dir is None:
        inputs = select_inputs(path, split=split)
        features = inputs.table[inputs.features].reset_index(drop=True)
        return MonitorSample(features=features, groups=exposure_groups(inputs.table))
    model, cfg, trained_on = RunDir(run_dir).load_model()
    names = model.features.names if model.features is not None else []
    channels = cfg.train.channels or read_dataset(trained_on).meta["channels"]
    return describe_split(model, load_split(path, names, list(channels), split=split, model=model), names)


def load_split(
    path: str | Path,
    feature_names: list[str],
    channel_names: list[str],
    *,
    split: str | None = None,
    model: HybridModel | None = None,
) -> SplitTensors:
    """The rows of a dataset directory (one split, or all) as tensors for a model trained on
    ``feature_names`` and ``channel_names``; with ``model``, its stamps normalised by the model's
    normaliser (as :func:`hybrid.training.train.normalize_splits` does for training data)."""
    inputs = select_inputs(path, features=feature_names, channels=channel_names, split=split)
    tensors = SplitTensors.from_inputs(inputs)
    if model is not None and model.image_encoder is not None:
        tensors.normalize_stamps(model.stamps)
    return tensors
