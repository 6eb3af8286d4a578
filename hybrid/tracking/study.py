"""Ablation studies: a small spec names a sweep, its seeds and its table; one command runs it.

A study spec is a YAML file in ``experiments/``::

    name: ablation_modalities
    description: Image-only, catalog-only and fused models on the default benchmark.
    sweep: [experiment=ablation_modalities]      # Hydra multirun overrides (the experiment may
                                                 # carry its own hydra.sweeper.params)
    seeds: [0, 1, 2]
    compare: {keys: [modality], metrics: [auc, fnr_at_1pct_fpr], sort: auc, x: null}

``hybrid study experiments/NAME.yaml [OVERRIDES...]`` runs ``python run.py -m <sweep> seed=<seeds>``
into ``multirun/studies/NAME`` (a fixed directory: runs that finished are kept and skipped when the
study is run again, killed runs resume from their last checkpoint), then regenerates the report
``reports/NAME.md`` from whatever runs are there. Extra overrides that change what is measured (e.g. a
smaller dataset) give the study its own directory and report, ``NAME-<hash of the overrides>``, so
they never mix with the runs of the spec as written; overrides that only say where and how fast it
runs (``hydra/launcher=...``, ``trainer=gpu``, ``train.threads=4``, ...) do not.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hybrid.config import REPO_ROOT as ROOT
from hybrid.tracking.compare import compare, write_report
from hybrid.tracking.runner import EXECUTION_ONLY
from hybrid.tracking.runs import Run, find_runs

__all__ = ["Study", "load_study", "run_study"]

# overrides that choose where a study runs (launcher, accelerator, paths), on top of the runner's
# execution-only ones (how fast and how quietly): neither changes what is studied
EXECUTION_OVERRIDES = (
    *EXECUTION_ONLY,
    "hydra/launcher",
    "hydra.launcher",
    "trainer=",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.precision",
    "paths.",
)


@dataclass
class Study:
    name: str
    sweep: list[str]
    seeds: list[int] = field(default_factory=lambda: [0])
    description: str = ""
    compare: dict = field(default_factory=dict)

    def tag(self, overrides: list[str]) -> str:
        """The study's directory and report name: its name, plus a hash of the extra overrides that
        change what is studied (not of those that only say where and how fast it runs)."""
        defining = [o for o in overrides if not o.lstrip("+~").startswith(EXECUTION_OVERRIDES)]
        if not defining:
            return self.name
        return f"{self.name}-{hashlib.sha1(' '.join(defining).encode()).hexdigest()[:8]}"

    def command(self, overrides: list[str], sweep_dir: Path) -> list[str]:
        seeds = ",".join(map(str, self.seeds))
        return [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            *self.sweep,
            f"seed={seeds}",
            *overrides,
            f"hydra.sweep.dir={sweep_dir}",
        ]


def load_study(path: Path) -> Study:
    """Read a study spec; errors name the file and the field."""
    spec = yaml.safe_load(Path(path).read_text())
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a study spec is a mapping (name, sweep, seeds, compare)")
    unknown = set(spec) - {"name", "sweep", "seeds", "description", "compare"}
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}")
    for key in ("name", "sweep"):
        if key not in spec:
            raise ValueError(f"{path}: missing field {key!r}")
    if not isinstance(spec["sweep"], list):
        raise ValueError(f"{path}: field 'sweep' must be a list of Hydra overrides")
    unknown = set(spec.get("compare") or {}) - {"keys", "metrics", "sort", "x"}
    if unknown:
        raise ValueError(f"{path}: unknown field(s) compare.{sorted(unknown)}")
    return Study(**{**spec, "compare": spec.get("compare") or {}})


def _trainer(run: Run) -> str:
    """Where a run trained, for the report (``trainer.accelerator``, and the precision on GPUs)."""
    accelerator, precision = run.get("trainer.accelerator"), run.get("trainer.precision")
    return f"{accelerator}" if precision is None else f"{accelerator}, {precision}"


def run_study(
    study: Study,
    *,
    overrides: list[str] | None = None,
    multirun_root: Path = Path("multirun/studies"),
    reports_dir: Path = Path("reports"),
    run: bool = True,
) -> Path:
    """Run the study's sweep (unless ``run`` is False: report only) and write its report; returns
    the report's path."""
    overrides = list(overrides or [])
    tag = study.tag(overrides)
    sweep_dir = (multirun_root / tag).resolve()
    if run:
        cmd = study.command(overrides, sweep_dir)
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
    runs, unfinished = find_runs([sweep_dir])
    if unfinished:
        print(
            f"{len(unfinished)} run(s) without metrics (failed or running): {', '.join(map(str, unfinished))}"
        )
    c = study.compare
    comparison = compare(runs, keys=c.get("keys"), metrics=c.get("metrics"), sort=c.get("sort"))
    print(comparison.markdown())
    description = study.description.strip()
    defining = [o for o in overrides if study.tag([o]) != study.name]
    if defining:
        description += f"\n\nRun with the extra overrides `{' '.join(defining)}`."
    trainers = "; ".join(sorted({_trainer(r) for r in runs}))
    description += f"\n\nTrainer: {trainers}. Rerun with `hybrid study experiments/{study.name}.yaml"
    description += f" {' '.join(defining)}`." if defining else "`."
    return write_report(
        comparison, reports_dir / tag, x=c.get("x"), title=study.name, description=description
    )
