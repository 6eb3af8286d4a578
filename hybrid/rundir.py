"""A training run's directory: the one reader and writer of what a run leaves behind.

Layout (written by the ``train`` task of :mod:`hybrid.tasks`)::

    config.yaml            resolved config (written first)
    metrics.json           flat test metrics, written last and atomically: it marks a finished run
    checkpoints/           best.ckpt, last.ckpt (Lightning)
    predictions.parquet    the scored test split
    plots/, csv/, wandb/   figures and loggers
    .hydra/overrides.yaml  what was set on the command line (under Hydra)

Export, tracking, monitoring, uncertainty and the study drivers read runs through :class:`RunDir`
only. Importing this module is cheap (no torch); :meth:`RunDir.load_model` imports the model code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from hybrid.io import write_text_atomic

if TYPE_CHECKING:
    from hybrid.models import HybridModel

__all__ = ["RunDir", "RunDirError"]


class RunDirError(ValueError):
    """A run directory lacks what is asked of it (config, checkpoint, dataset); names the path."""


def _with_inputs(cfg: DictConfig) -> DictConfig:
    """Configs written before the ``modality`` group had no ``inputs``: derive them from the encoders."""
    if cfg.get("inputs") is None:
        inputs = [
            m for m, key in (("image", "image_encoder"), ("catalog", "tabular_encoder")) if cfg.get(key)
        ]
        cfg = OmegaConf.merge(cfg, {"inputs": inputs})
    return cfg


@dataclass(frozen=True)
class RunDir:
    """A run directory (need not exist yet)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def finished(self, config_yaml: str | None = None) -> bool:
        """Whether the run finished (``metrics.json`` exists); with ``config_yaml``, also whether it
        ran that exact resolved config."""
        if not self.metrics_path.is_file():
            return False
        return config_yaml is None or (
            self.config_path.is_file() and self.config_path.read_text() == config_yaml
        )

    def config(self) -> DictConfig:
        """The run's resolved config (older runs' configs get their ``inputs``)."""
        if not self.config_path.is_file():
            raise RunDirError(f"{self.config_path}: missing; is {self.path} a training run directory?")
        cfg = OmegaConf.load(self.config_path)
        assert isinstance(cfg, DictConfig)
        return _with_inputs(cfg)

    def metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json`` (test metrics and run facts such as ``dataset``)."""
        if not self.metrics_path.is_file():
            raise RunDirError(f"{self.metrics_path}: missing; the run has not finished")
        return json.loads(self.metrics_path.read_text())

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Write ``metrics.json`` atomically (its presence marks a finished run)."""
        return write_text_atomic(self.metrics_path, json.dumps(metrics, indent=2))

    def write_config(self, cfg: DictConfig | str) -> Path:
        """Write ``config.yaml`` (resolved) atomically."""
        text = cfg if isinstance(cfg, str) else OmegaConf.to_yaml(cfg, resolve=True)
        return write_text_atomic(self.config_path, text)

    def checkpoint(self, name: str = "best") -> Path:
        """``checkpoints/<name>.ckpt``, else ``last.ckpt``."""
        for ckpt in (self.path / "checkpoints" / f"{name}.ckpt", self.path / "checkpoints" / "last.ckpt"):
            if ckpt.is_file():
                return ckpt
        raise RunDirError(f"{self.path / 'checkpoints'}: no {name}.ckpt or last.ckpt")

    def dataset(self, cfg: DictConfig | None = None) -> Path:
        """The dataset the run trained on: ``metrics.json``'s ``dataset``, else the config's
        content-hashed path in the cache."""
        if self.metrics_path.is_file():
            recorded = self.metrics().get("dataset")
            if recorded and Path(recorded).is_dir():
                return Path(recorded)
        from hybrid.data.build import BuildPlan

        path = BuildPlan.from_config(cfg if cfg is not None else self.config()).path
        if not path.is_dir():
            raise RunDirError(
                f"{self.path}: the run's dataset ({path}) is not in the cache; rebuild it with "
                "`hybrid build` and the run's overrides"
            )
        return path

    def load_model(self, checkpoint: str = "best") -> tuple[HybridModel, DictConfig, Path]:
        """The trained HybridModel (eval mode), the run's config and its dataset directory."""
        import torch

        from hybrid.data.dataset import select_inputs
        from hybrid.training.train import make_model, model_features

        cfg = self.config()
        ckpt = self.checkpoint(checkpoint)
        dataset = self.dataset(cfg)
        inputs = select_inputs(dataset, features=model_features(cfg), channels=cfg.train.channels)
        model = make_model(cfg, in_chans=len(inputs.channels), feature_names=inputs.features)
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        own = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        try:
            model.load_state_dict(own, strict=True)
        except RuntimeError as err:
            raise RunDirError(f"{ckpt}: does not match the model of {self.config_path}: {err}") from None
        return model.eval(), cfg, dataset
