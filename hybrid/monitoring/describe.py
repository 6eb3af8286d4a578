"""What a model sees of a set of candidates, for the monitors: scores, features and embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from hybrid.data.dataset import DatasetError, read_dataset
from hybrid.models import HybridModel
from hybrid.monitoring.detectors import MonitorSample
from hybrid.training.data import SplitTensors
from hybrid.training.train import build_model, make_datamodule, score_split, split_inputs


@torch.no_grad()
def embed_split(model: HybridModel, split: SplitTensors, batch_size: int = 1024) -> np.ndarray | None:
    """Image-encoder embeddings (N, D) of a split with normalised stamps; None for a model without
    an image encoder."""
    if model.image_encoder is None:
        return None
    out = [model.image_encoder(image).float().cpu() for image, _ in split_inputs(model, split, batch_size)]
    return torch.cat(out).numpy()


def describe_split(model: HybridModel, split: SplitTensors, feature_names: list[str]) -> MonitorSample:
    """Scores (no test-time augmentation), features and embeddings of a split with normalised stamps."""
    scored = score_split(model, split, rotation_average=False)
    return MonitorSample(
        scores=scored["score"].to_numpy(float),
        features=split.table[feature_names].reset_index(drop=True),
        embeddings=embed_split(model, split),
    )


def load_run_model(run_dir: str | Path, dataset: str | Path) -> tuple[HybridModel, list[str], list[str]]:
    """The trained model of a run directory (``config.yaml`` + ``checkpoints/best.ckpt``), built for
    ``dataset``'s features and channels; returns (model, feature names, channel names)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not (run_dir / "config.yaml").is_file() or not ckpt.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (needs config.yaml and checkpoints/)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    dm = make_datamodule(cfg, Path(dataset))
    model = build_model(cfg, dm)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model.eval(), dm.feature_names, dm.channel_names


def load_sample(
    path: str | Path, *, run_dir: str | Path | None = None, split: str | None = None
) -> MonitorSample:
    """A :class:`MonitorSample` of a dataset directory (features; with ``run_dir``, also the model's
    scores and embeddings) or of a candidate table in Parquet (its feature columns and, when present,
    its ``score`` column, e.g. a run's ``predictions.parquet``). ``split`` keeps one split only."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"{path}: expected a dataset directory or a .parquet candidate table")
        table = pd.read_parquet(path)
        if split is not None:
            table = table[table["split"] == split]
        scores = table["score"].to_numpy(float) if "score" in table else None
        features = table.select_dtypes("number").drop(columns=["score"], errors="ignore")
        return MonitorSample(scores=scores, features=features.reset_index(drop=True))
    ds = read_dataset(path)
    table = ds.candidates if split is None else ds.candidates[ds.candidates["split"] == split]
    if run_dir is None:
        names = list(ds.meta["features"])
        return MonitorSample(features=table[names].reset_index(drop=True))
    model, names, channels = load_run_model(run_dir, path)
    missing = [f for f in names if f not in table.columns]
    if missing:
        raise DatasetError(f"{path / 'candidates.parquet'}: the model needs features {missing}")
    index = [list(ds.meta["channels"]).index(c) for c in channels]
    tensors = SplitTensors(ds.stamps, table, names, index)
    if model.image_encoder is not None:
        tensors.normalize_stamps(model.stamps)
    return describe_split(model, tensors, names)
