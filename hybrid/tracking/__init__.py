"""Comparing runs and running ablation studies: run records (local run directories or W&B),
grouped tables over seeds with plots (`hybrid compare`), study specs (`hybrid study`), and the W&B
grouping of sweep jobs."""

from hybrid.tracking.compare import Comparison, compare, write_report
from hybrid.tracking.runs import Run, find_runs, flatten, wandb_runs
from hybrid.tracking.study import Study, load_study, run_study

__all__ = [
    "Comparison",
    "Run",
    "Study",
    "compare",
    "find_runs",
    "flatten",
    "load_study",
    "run_study",
    "wandb_runs",
    "write_report",
]
