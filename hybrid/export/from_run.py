"""Export a training run directory: rebuild its HybridModel, load the checkpoint, write a bundle."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from hybrid.data.dataset import DatasetError, read_dataset
from hybrid.export.bundle import BundleError, export_model
from hybrid.models import HybridModel
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


def _with_inputs(cfg: DictConfig) -> DictConfig:
    """Configs written before the ``modality`` group had no ``inputs``: derive them from the encoders."""
    if cfg.get("inputs") is None:
        inputs = [
            m for m, key in (("image", "image_encoder"), ("catalog", "tabular_encoder")) if cfg.get(key)
        ]
        cfg = OmegaConf.merge(cfg, {"inputs": inputs})
    return cfg


def run_dataset(run_dir: Path, cfg: DictConfig) -> Path:
    """The dataset a run trained on: metrics.json's ``dataset``, else the config's content-hashed path."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        recorded = json.loads(metrics.read_text()).get("dataset")
        if recorded and Path(recorded).is_dir():
            return Path(recorded)
    from hybrid.data.build import BuildPlan

    path = BuildPlan.from_config(cfg).path
    if not path.is_dir():
        raise DatasetError(
            f"{run_dir}: the run's dataset ({path}) is not in the cache; rebuild it with "
            f"`hybrid build` and the run's overrides (export needs its feature list and a few golden inputs)"
        )
    return path


def load_run_model(run_dir: str | Path, *, checkpoint: str = "best") -> tuple[HybridModel, DictConfig, Path]:
    """The trained HybridModel of a run directory (eval mode), its config, and its dataset directory."""
    from hybrid.training.train import make_model, model_features

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise BundleError(f"{run_dir / 'config.yaml'}: missing; is {run_dir} a training run directory?")
    cfg = _with_inputs(OmegaConf.load(run_dir / "config.yaml"))
    ckpt = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not ckpt.is_file():
        ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise BundleError(f"{run_dir / 'checkpoints'}: no {checkpoint}.ckpt or last.ckpt")
    dataset = run_dataset(run_dir, cfg)
    meta = read_dataset(dataset).meta
    selected = model_features(cfg)
    features = list(meta["features"]) if selected is None else selected
    channels = list(meta["channels"]) if cfg.train.channels is None else list(cfg.train.channels)
    model = make_model(cfg, in_chans=len(channels), feature_names=features)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    own = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(own, strict=True)
    except RuntimeError as err:
        raise BundleError(f"{ckpt}: does not match the model of {run_dir / 'config.yaml'}: {err}") from None
    return model.eval(), cfg, dataset


def golden_inputs(
    dataset: Path, model: HybridModel, channels: list[str], n: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real raw inputs for the golden pair: test-split candidates (those with NaN pixels first)."""
    ds = read_dataset(dataset)
    table = ds.candidates
    rows = (
        np.flatnonzero((table["split"] == "test").to_numpy()) if "split" in table else np.arange(len(table))
    )
    nan_rows = (
        rows[table["stamp_nan_fraction"].to_numpy()[rows] > 0] if "stamp_nan_fraction" in table else rows[:0]
    )
    pick = np.unique(np.concatenate([nan_rows[: n // 4], rows[:n]]))[:n]
    order = [list(ds.meta["channels"]).index(c) for c in channels]
    stamps = np.asarray(ds.stamps[pick][:, order], np.float32)
    names = model.features.names if model.features is not None else []
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
    run_dir = Path(run_dir)
    model, cfg, dataset = load_run_model(run_dir, checkpoint=checkpoint)
    meta = read_dataset(dataset).meta
    channels = list(meta["channels"]) if cfg.train.channels is None else list(cfg.train.channels)
    if model.image_encoder is None:
        channels = []
    units = meta["features"]
    features = {
        name: units.get(name, "") for name in (model.features.names if model.features is not None else [])
    }
    stamps, feats = golden_inputs(dataset, model, channels or list(meta["channels"]))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
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
