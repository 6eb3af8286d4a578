"""Shared fixtures: small configs and simulated fields that keep the default suite fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig

from hybrid.cli import load_config
from hybrid.sim.survey import SurveyProfile

os.environ.setdefault("WANDB_MODE", "disabled")
CONF = Path(__file__).resolve().parent.parent / "conf"

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
