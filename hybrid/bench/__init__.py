"""Benchmarks (`hybrid bench WHAT`): measured side by side in one run against a baseline, results
written as Markdown and JSON to reports/. Each module ``hybrid.bench.<what>`` exposes
``run(cfg, *, out_dir, fields) -> Path``."""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig

BENCHMARKS = ("build", "subtraction", "context", "train", "predict", "stream")


def run_benchmark(what: str, cfg: DictConfig, *, out_dir: Path, fields: int | None = None) -> Path:
    if what not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {what!r}; known: {', '.join(BENCHMARKS)}")
    try:
        module = importlib.import_module(f"hybrid.bench.{what}")
    except ModuleNotFoundError as err:
        raise KeyError(f"benchmark {what!r} is not available in this version") from err
    return module.run(cfg, out_dir=out_dir, fields=fields)
