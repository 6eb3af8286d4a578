"""Tasks that `python run.py task=NAME` and the `hybrid` command both run (one function each)."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from hybrid.data.build import build_dataset


def train(cfg: DictConfig) -> object:
    from hybrid.training.train import train as run  # imports torch and lightning only when training

    return run(cfg)


TASKS: dict[str, Callable[[DictConfig], object]] = {
    "build_dataset": build_dataset,
    "train": train,
}


def run_task(cfg: DictConfig) -> object:
    """Run ``cfg.task``; with ``optimized_metric`` set, return that metric (what a sweeper such as
    Optuna optimises) instead of the task's whole result."""
    name = cfg.task.name
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    result = TASKS[name](cfg)
    metric = cfg.get("optimized_metric")
    if metric is None:
        return result
    if not isinstance(result, dict) or metric not in result:
        raise KeyError(f"optimized_metric={metric!r} is not among the results of task {name!r}")
    return float(result[metric])
