"""Benchmarks (`hybrid bench WHAT`): measured side by side in one run against a baseline, results
written as Markdown and JSON to reports/. Each module ``hybrid.bench.<what>`` exposes
``run(cfg, *, out_dir, fields, **options) -> Path`` (``real`` takes ``bundle``)."""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig

BENCHMARKS = ("build", "subtraction", "context", "train", "predict", "pipeline", "real", "stream")


def run_benchmark(
    what: str, cfg: DictConfig, *, out_dir: Path | None = None, fields: int | None = None, **options
) -> Path:
    """Run benchmark ``what``; ``out_dir`` None: the benchmark's own default (reports/); ``options``
    that are None are left out (the benchmark's defaults apply)."""
    if what not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {what!r}; known: {', '.join(BENCHMARKS)}")
    try:
        module = importlib.import_module(f"hybrid.bench.{what}")
    except ModuleNotFoundError as err:
        raise KeyError(f"benchmark {what!r} is not available in this version") from err
    given = {k: v for k, v in {"out_dir": out_dir, **options}.items() if v is not None}
    return module.run(cfg, fields=fields, **given)
