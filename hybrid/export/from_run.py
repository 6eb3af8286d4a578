"""Export a training run directory: rebuild its HybridModel, load the checkpoint, write a bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from hybrid.data.dataset import read_dataset, select_inputs
from hybrid.export.bundle import export_model
from hybrid.models import HybridModel
from hybrid.rundir import RunDir
from hybrid.taxonomy import TRANSIENT_TYPES

FORMATS = ("onnx",)


class ServingModel(nn.Module):
    """A HybridModel's probabilities under the bundle's output names: ``score`` (B,), ``p_types`` (B, K).

    With ``rotation_average`` the probabilities are averaged over the 8 flips and rotations of the
    stamps inside the graph (8 times the work; see :meth:`HybridModel.predict`).
    """

    output_names = ("score", "p_types")

    def __init__(self, model: HybridModel, *, rotation_average: bool = False) -> None:
        super().__init__()
        self.model = model
        self.rotation_average = rotation_average

    def forward(
        self, image: torch.Tensor | None, features: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predict(image, features, rotation_average=self.rotation_average)


def load_run_model(run_dir: str | Path, *, checkpoint: str = "best") -> tuple[HybridModel, DictConfig, Path]:
    """The trained HybridModel of a run directory (eval mode), its config, and its dataset directory
    (:meth:`hybrid.rundir.RunDir.load_model`)."""
    return RunDir(run_dir).load_model(checkpoint)


def golden_inputs(
    dataset: Path, model: HybridModel, channels: list[str], n: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real raw inputs for the golden pair: test-split candidates (those with NaN pixels first)."""
    names = model.features.names if model.features is not None else []
    inputs = select_inputs(dataset, features=names, channels=channels)
    table = inputs.table
    rows = (
        np.flatnonzero((table["split"] == "test").to_numpy()) if "split" in table else np.arange(len(table))
    )
    nan_rows = (
        rows[table["stamp_nan_fraction"].to_numpy()[rows] > 0] if "stamp_nan_fraction" in table else rows[:0]
    )
    pick = np.unique(np.concatenate([nan_rows[: n // 4], rows[:n]]))[:n]
    stamps = np.asarray(inputs.dataset.stamps[pick][:, inputs.channel_index], np.float32)
    features = table.iloc[pick][names].to_numpy(np.float32) if names else np.zeros((len(pick), 0), np.float32)
    return stamps, features


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    format: str = "onnx",
    checkpoint: str = "best",
    rotation_average: bool = False,
    ensemble: Sequence[str | Path] = (),
    mc_samples: int = 0,
    temperature: float = 1.0,
) -> Path:
    """Write the bundle of a training run (default ``<run_dir>/export/``); returns its directory.

    Args:
        run_dir: a run directory (config.yaml, checkpoints/, metrics.json).
        out: bundle directory.
        format: only ``onnx``.
        checkpoint: ``best`` or ``last``.
        rotation_average: average over the 8 flips and rotations inside the graph (8x slower).
        ensemble: further run directories: export the deep ensemble of ``run_dir`` and these.
        mc_samples: export MC dropout of the run's model with this many (frozen) samples.
        temperature: divides the real-bogus logits (temperature scaling) of ``ensemble`` or
            ``mc_samples`` bundles.

    With ``ensemble`` or ``mc_samples`` the bundle also outputs ``score_std``, ``entropy`` and
    ``mutual_info`` (:func:`hybrid.uncertainty.wrappers.uncertainty_model`).
    """
    if format not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {format!r}")
    run = RunDir(run_dir)
    run_dir = run.path
    model, cfg, dataset = run.load_model(checkpoint)
    meta = read_dataset(dataset).meta
    channels = select_inputs(dataset, features=[], channels=cfg.train.channels).channels
    if model.image_encoder is None:
        channels = []
    units = meta["features"]
    features = {
        name: units.get(name, "") for name in (model.features.names if model.features is not None else [])
    }
    stamps, feats = golden_inputs(dataset, model, channels or list(meta["channels"]))
    metrics = run.metrics() if run.finished() else {}
    module: nn.Module = ServingModel(model, rotation_average=rotation_average)
    if ensemble or mc_samples:
        from hybrid.uncertainty.wrappers import uncertainty_model

        members = [load_run_model(r, checkpoint=checkpoint)[0] for r in ensemble]
        module = uncertainty_model(
            model,
            members=members,
            mc_samples=mc_samples,
            temperature=temperature,
            rotation_average=rotation_average,
        )
    return export_model(
        module,
        Path(out) if out is not None else run_dir / "export",
        channels=channels,
        stamp_size=int(meta["stamp_size"]),
        features=features,
        golden_stamps=stamps,
        golden_features=feats,
        labels=list(TRANSIENT_TYPES),
        config=OmegaConf.to_yaml(cfg, resolve=True),
        source={
            "run_dir": str(run_dir.resolve()),
            "checkpoint": checkpoint,
            "ensemble": [str(Path(r).resolve()) for r in ensemble],
            "mc_samples": mc_samples,
            "temperature": temperature,
            "dataset": str(dataset),
            "survey": meta.get("survey"),
            "pixel_scale": meta.get("pixel_scale"),
            "test_metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
        },
        extra_preprocess={"rotation_average": rotation_average},
    )
