"""Shared fixtures: small configs and simulated fields that keep the default suite fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig

from hybrid.config import CONF_DIR as CONF
from hybrid.config import load_config
from hybrid.sim.survey import SurveyProfile

os.environ.setdefault("WANDB_MODE", "disabled")

SMALL = [
    "sim.shape=[256,256]",
    "sim.epochs_per_field=2",
    "data.n_fields=2",
    "data.fields_per_shard=1",
    "data.workers=1",
    "data.progress=false",
    "data.stamp_size=31",
]


def survey_profile(name: str) -> SurveyProfile:
    d = yaml.safe_load((CONF / "survey" / f"{name}.yaml").read_text())
    d.pop("_target_")
    return SurveyProfile(**d)


@pytest.fixture
def small_cfg(tmp_path: Path) -> DictConfig:
    """The default config on 256x256 frames, two fields, cached under tmp_path."""
    return load_config([*SMALL, f"paths.cache_dir={tmp_path / 'cache'}"])


#: A tiny trained run (about 10 s on 2 cores) for export and predict tests.
TINY_RUN = [
    "sim.shape=[384,384]",
    "sim.epochs_per_field=2",
    "data.n_fields=3",
    "data.workers=1",
    "data.progress=false",
    "image_encoder.widths=[8,16]",
    "tabular_encoder.hidden=[16]",
    "fusion.dim=16",
    "train.batch_size=64",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "train.threads=1",
    "logger.wandb.enabled=false",
    "preprocess.rotation_average=false",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory trained for one epoch on three small simulated fields."""
    from hybrid.tasks import train

    root = tmp_path_factory.mktemp("tiny_run")
    train(load_config([*TINY_RUN, f"paths.cache_dir={root / 'cache'}", f"run_dir={root / 'run'}"]))
    return root / "run"


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run: Path) -> Path:
    """The export bundle of :func:`tiny_run`, written by ``hybrid export``."""
    from hybrid.cli import main

    out = tiny_run.parent / "bundle"
    assert main(["export", str(tiny_run), "--format", "onnx", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def ensemble_bundle(tiny_run: Path) -> Path:
    """A bundle with an extra output (``score_std``): two members built from :func:`tiny_run`."""
    import torch
    from torch import nn

    from hybrid.data.dataset import read_dataset
    from hybrid.export import export_model, load_run_model
    from hybrid.export.from_run import golden_inputs
    from hybrid.taxonomy import TRANSIENT_TYPES

    class TwoMembers(nn.Module):
        output_names = ("score", "p_types", "score_std")

        def __init__(self, a: nn.Module, b: nn.Module) -> None:
            super().__init__()
            self.members = nn.ModuleList([a, b])

        def forward(self, image, features):
            outs = [m.predict(image, features) for m in self.members]
            scores = torch.stack([o[0] for o in outs])
            return scores.mean(0), torch.stack([o[1] for o in outs]).mean(0), scores.std(0)

    a, _, dataset = load_run_model(tiny_run)
    b, _, _ = load_run_model(tiny_run)
    with torch.no_grad():
        for p in b.real_bogus_head.parameters():
            p.add_(0.5)
    channels = ["sci", "ref", "diff"]
    stamps, features = golden_inputs(dataset, a, channels, n=4)
    units = read_dataset(dataset).meta["features"]
    return export_model(
        TwoMembers(a, b),
        tiny_run.parent / "ensemble",
        channels=channels,
        stamp_size=stamps.shape[-1],
        features={n: units[n] for n in a.features.names},
        golden_stamps=stamps,
        golden_features=features,
        labels=list(TRANSIENT_TYPES),
    )
