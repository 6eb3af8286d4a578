"""Finished runs as records: local run directories (the source of truth) or W&B runs.

A run directory is any directory holding ``metrics.json`` (a flat dict of numbers and strings written
by the training task) beside ``config.yaml`` (the resolved config). Runs started by Hydra also hold
``.hydra/hydra.yaml`` and ``.hydra/overrides.yaml``; from them a run gets the config-group choices
(``modality: fused``, ``subtraction: zogy``) and the command-line overrides, so tables can be keyed
by what was swept even where the resolved config no longer names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybrid.rundir import RunDir

__all__ = ["Run", "find_runs", "flatten", "wandb_runs"]


@dataclass(frozen=True)
class Run:
    """One finished run.

    Attributes:
        path: its run directory (or W&B run path).
        config: resolved config, flattened to dotted keys (``train.lr``), plus the Hydra group
            choices (``modality``) and overrides (``seed``) by their names.
        metrics: the test metrics (``metrics.json``, or the W&B summary's ``test/*``).
        predictions: the test-split predictions table, when the run wrote one.
    """

    path: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    predictions: Path | None = field(default=None, compare=False)

    def get(self, key: str) -> Any:
        """A config key, a group choice or a metric, by name (None when the run lacks it)."""
        if key in self.config:
            return self.config[key]
        return self.metrics.get(key)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become hashable strings (``[sci, diff]``)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}.") if v else {key: "{}"})
        elif isinstance(v, list | tuple):
            out[key] = "[" + ", ".join(map(str, v)) + "]"
        else:
            out[key] = v
    return out


def _hydra_labels(run_dir: Path) -> dict[str, Any]:
    """Group choices and command-line overrides of a Hydra job (empty outside Hydra)."""
    labels: dict[str, Any] = {}
    hydra_yaml, overrides_yaml = run_dir / ".hydra" / "hydra.yaml", run_dir / ".hydra" / "overrides.yaml"
    if hydra_yaml.exists():
        choices = yaml.safe_load(hydra_yaml.read_text())["hydra"]["runtime"]["choices"]
        labels.update({k: v for k, v in choices.items() if not k.startswith("hydra/")})
    if overrides_yaml.exists():
        for item in yaml.safe_load(overrides_yaml.read_text()) or []:
            key, _, value = str(item).lstrip("+~").partition("=")
            if not key.startswith("hydra"):
                labels[key] = yaml.safe_load(value) if value else value
    return labels


def load_run(run_dir: Path) -> Run:
    """The run in ``run_dir`` (which holds ``metrics.json``)."""
    metrics = RunDir(run_dir).metrics()
    config_yaml = RunDir(run_dir).config_path
    config = flatten(yaml.safe_load(config_yaml.read_text()) or {}) if config_yaml.exists() else {}
    for key, value in _hydra_labels(run_dir).items():
        config[key] = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else value
    predictions = run_dir / "predictions.parquet"
    return Run(str(run_dir), config, metrics, predictions if predictions.exists() else None)


def find_runs(paths: Iterable[Path]) -> tuple[list[Run], list[Path]]:
    """Every finished run under ``paths`` (run directories or sweep directories, searched
    recursively), and the run directories that have a config but no metrics (failed or running)."""
    runs: dict[Path, Run] = {}
    unfinished: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run or sweep directory")
        for metrics_json in sorted(path.rglob("metrics.json")):
            if "wandb" not in metrics_json.parts:
                runs.setdefault(metrics_json.parent, load_run(metrics_json.parent))
        unfinished.update(c.parent for c in path.rglob("config.yaml") if c.parent.name != ".hydra")
    return list(runs.values()), sorted(unfinished - set(runs))


def wandb_runs(project: str, filters: dict | None = None) -> list[Run]:
    """Finished runs of a W&B project (``ENTITY/PROJECT``) through the public API (needs a login).

    The config is flattened as for local runs; the metrics are the summary's ``test/*`` values.
    """
    import wandb

    out = []
    for r in wandb.Api().runs(project, filters=filters or {}):
        if r.state != "finished":
            continue
        metrics = {k.removeprefix("test/"): v for k, v in r.summary.items() if k.startswith("test/")}
        out.append(Run(r.url, flatten(dict(r.config)), metrics))
    return out
