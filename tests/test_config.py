"""Every config composes and instantiates; run.py and the hybrid command call the same function."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from hybrid.cli import main
from hybrid.config import load_config
from hybrid.curation import LABEL_SOURCES, Curation
from hybrid.detection import Detector
from hybrid.models import HybridModel
from hybrid.sim.field import SimConfig
from hybrid.sim.survey import SurveyProfile
from hybrid.subtraction import SUBTRACTORS, Subtractor
from hybrid.tasks import TASKS
from hybrid.taxonomy import TRANSIENT_TYPES
from tests.conftest import CONF, SMALL

ROOT = CONF.parent


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("survey", _options("survey"))
@pytest.mark.parametrize("subtraction", _options("subtraction"))
@pytest.mark.parametrize("curation", _options("curation"))
def test_every_group_option_composes_and_instantiates(survey: str, subtraction: str, curation: str) -> None:
    cfg = load_config([f"survey={survey}", f"subtraction={subtraction}", f"curation={curation}"])
    assert isinstance(instantiate(cfg.survey), SurveyProfile)
    assert isinstance(instantiate(cfg.sim), SimConfig)
    assert isinstance(instantiate(cfg.subtraction), Subtractor)
    assert isinstance(instantiate(cfg.detection), Detector)
    assert isinstance(instantiate(cfg.curation), Curation)


def _sweep_points(name: str) -> list[list[str]]:
    """The points of an experiment's own sweep (``hydra.sweeper.params``) as override lists."""
    from itertools import product

    from hydra.core.override_parser.overrides_parser import OverridesParser

    raw = yaml.safe_load((CONF / "experiment" / f"{name}.yaml").read_text()) or {}
    params = (((raw.get("hydra") or {}).get("sweeper") or {}).get("params")) or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    return [list(point) for point in product(*axes)]


EXPERIMENT_POINTS = [(n, p) for n in _options("experiment") for p in _sweep_points(n)]


@pytest.mark.parametrize(
    ("name", "point"), EXPERIMENT_POINTS, ids=[" ".join([n, *p]) for n, p in EXPERIMENT_POINTS]
)
def test_experiment_configs_compose_and_instantiate(name: str, point: list[str]) -> None:
    """Every experiment, at every point of its own sweep, composes and builds a working model."""
    cfg = load_config([f"experiment={name}", *point])
    for group in ("survey", "sim", "subtraction", "detection", "curation", "context"):
        assert instantiate(cfg[group]) is not None
    in_chans = len(cfg.train.channels) if cfg.train.channels else 3
    model = HybridModel(
        in_chans=in_chans,
        n_features=8,
        n_types=len(TRANSIENT_TYPES),
        image_encoder=instantiate(cfg.image_encoder) if "image" in cfg.inputs else None,
        tabular_encoder=instantiate(cfg.tabular_encoder) if "catalog" in cfg.inputs else None,
        fusion=instantiate(cfg.fusion),
        stamps=instantiate(cfg.preprocess.stamps),
    )
    size = cfg.data.stamp_size
    rb, ty = model(torch.randn(2, in_chans, size, size), torch.randn(2, 8))
    assert rb.shape == (2,) and ty.shape == (2, len(TRANSIENT_TYPES))
    assert cfg.trainer._target_ == "lightning.Trainer" and cfg.task.name in TASKS


def test_every_subtractor_and_label_source_has_a_config() -> None:
    targets = {
        (CONF / "subtraction" / f"{n}.yaml").read_text().split("_target_:")[1].split()[0]
        for n in _options("subtraction")
    }
    assert {f"{c.__module__}.{c.__qualname__}" for c in map(SUBTRACTORS.get, SUBTRACTORS.names())} <= targets
    assert {"truth", "algorithmic", "injected"} <= set(LABEL_SOURCES.names())


def test_unknown_plugin_names_are_clear() -> None:
    with pytest.raises(KeyError, match=f"registered: {', '.join(SUBTRACTORS.names())}"):
        SUBTRACTORS.get("hotpants")


def test_run_py_and_hybrid_build_make_the_same_dataset(tmp_path: Path) -> None:
    overrides = [*SMALL, "data.n_fields=1", "sim.epochs_per_field=1", f"paths.cache_dir={tmp_path}"]
    subprocess.run(
        [sys.executable, "run.py", "task=build_dataset", *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    built = list(tmp_path.glob("datasets/*/meta.json"))
    assert len(built) == 1
    assert main(["build", *overrides]) == 0  # reuses the very same directory
    assert list(tmp_path.glob("datasets/*/meta.json")) == built
