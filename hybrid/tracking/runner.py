"""The study runner: runs a list of training jobs, each dataset built once, N at a time, to a deadline.

Drivers of studies (experiments/*.py) keep only their grid (a list of :class:`Job`) and their report;
this runs the jobs. Each run is the library's ``train`` task in its own run directory
(``root/<study>/<name>``, with ``.hydra/overrides.yaml`` as a Hydra run writes it), either as
``python run.py OVERRIDES hydra.run.dir=DIR`` or, in process, in worker processes that import the
library once. Runs that finished (:meth:`hybrid.rundir.RunDir.finished`) are skipped when a study is
run again; datasets are built once, before their runs (the training seed does not change a dataset).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from hybrid.config import CONF_DIR, REPO_ROOT, load_config
from hybrid.rundir import RunDir

__all__ = [
    "EXECUTION_ONLY",
    "RUN_DEFAULTS",
    "Job",
    "StudyRunner",
    "by_seed",
    "execution_only",
    "train_in_process",
]

#: prefixes of the overrides that say how a run goes (workers, threads, progress bars, logging), not
#: what it measures: reports and study names leave them out
EXECUTION_ONLY = ("data.workers", "data.progress", "train.threads", "trainer.enable_progress_bar", "logger.")


def execution_only(override: str) -> bool:
    """Whether a Hydra override (``key=value``, ``+key=value``, ``~key``) only says how a run goes."""
    return override.lstrip("+~").startswith(EXECUTION_ONLY)


#: quiet, single-threaded runs (several share the machine); no W&B (all of them execution-only)
RUN_DEFAULTS = [
    "logger.wandb.enabled=false",
    "trainer.enable_progress_bar=false",
    "data.progress=false",
    "train.threads=1",
]


@dataclass
class Job:
    """One training run of a study."""

    study: str
    name: str  # the run directory's name (may hold "/": nested directories)
    seed: int | None  # None: the config's own
    overrides: list[str]
    dataset: list[str] | None  # the overrides that define its dataset (with the seed); None: built already
    labels: dict = field(default_factory=dict)  # what the report keys it by (arm, n_pure, ...)

    def seed_overrides(self) -> list[str]:
        return [] if self.seed is None else [f"seed={self.seed}"]


def _key_hash(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def by_seed(*queues: list[Job]) -> list[Job]:
    """The jobs of all queues, seed by seed (each queue's order kept within a seed)."""
    seeds = sorted({j.seed for q in queues for j in q})
    return [j for s in seeds for q in queues for j in q if j.seed == s]


class StudyRunner:
    """Runs jobs ``jobs`` at a time, building each dataset once first; stops starting runs that
    would not finish before the deadline (estimated from the runs so far); skips finished runs.

    Args:
        root: the studies' directory; job ``j`` runs in ``root / j.study / j.name``.
        jobs: runs at once.
        deadline: seconds after which no run starts or continues (None: no deadline).
        extra: Hydra overrides of every run and every dataset build.
        build_workers: processes of each dataset build.
        in_process: train in ``jobs`` worker processes that import the library once (else one
            ``python run.py`` per run), composing from a snapshot of conf/ taken now.
        run_defaults: overrides of every run that say how it runs (quiet, threads, no W&B).
        conf_name: the snapshot's directory name (one per driver: drivers may run side by side).
        skip_finished: skip a run whose directory holds metrics.json, whatever its config (else
            the train task decides: ``train.skip_finished`` skips it only with the same config).
        mp_context: how in-process workers start (``spawn`` when this process has imported torch).
        on_record: called with each run's record as it ends (e.g. to rewrite a report).
    """

    def __init__(
        self,
        root: Path,
        *,
        jobs: int,
        deadline: float | None,
        extra: list[str],
        build_workers: int,
        in_process: bool,
        run_defaults: list[str] = RUN_DEFAULTS,
        conf_name: str = "conf",
        skip_finished: bool = True,
        mp_context: str = "fork",
        on_record: Callable[[dict], object] | None = None,
    ) -> None:
        self.root, self.run_defaults = Path(root), list(run_defaults)
        self.skip_finished, self.mp_context = skip_finished, mp_context
        self.on_record = on_record or (lambda record: None)
        self.jobs, self.extra, self.build_workers, self.in_process = jobs, extra, build_workers, in_process
        self.conf = self.root / f"{conf_name}-{os.getpid()}"
        if in_process:
            shutil.rmtree(self.conf, ignore_errors=True)
            shutil.copytree(CONF_DIR, self.conf)
        self.end = time.monotonic() + deadline if deadline else None
        self.built: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()
        self.durations: list[float] = []
        self.log: list[dict] = []

    def _remaining(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()

    def _run(self, cmd: list[str], log_path: Path, timeout: float | None) -> int:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
        with open(log_path, "w") as out:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
            try:
                return proc.wait(timeout=None if timeout == float("inf") else timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return -9

    def _finished(self, run_dir: Path) -> bool:
        return self.skip_finished and RunDir(run_dir).finished()

    def _dataset(self, job: Job) -> bool:
        if job.dataset is None:
            return True
        if self.in_process:  # in this process, from the snapshot of conf/
            from hybrid.data.build import build_dataset

            t0 = time.monotonic()
            cfg = load_config(
                [*job.dataset, *self.extra, f"data.workers={self.build_workers}", "data.progress=false"],
                conf=self.conf,
            )
            path = build_dataset(cfg)
            self.log.append({"build": str(path), "seconds": time.monotonic() - t0})
            return True
        key = " ".join(sorted([*job.dataset, *self.extra]))
        with self.guard:
            lock = self.built.setdefault(key, threading.Lock())
        with lock:  # the first job of a dataset builds it; the others wait for it
            done = self.root / "datasets" / f"{_key_hash(key)}.done"
            if done.exists() and done.read_text() == key:
                return True
            cmd = [
                sys.executable,
                "run.py",
                "task=build_dataset",
                *job.dataset,
                *self.extra,  # those that change the dataset (data.n_fields, ...) must reach the build
                f"data.workers={self.build_workers}",
                "data.progress=false",
                f"hydra.run.dir={self.root / 'datasets' / 'runs' / str(_key_hash(key))}",
            ]
            t0 = time.monotonic()
            rc = self._run(cmd, self.root / "datasets" / f"{_key_hash(key)}.log", self._remaining())
            self.log.append({"build": key, "rc": rc, "seconds": time.monotonic() - t0})
            if rc == 0:
                done.write_text(key)
            return rc == 0

    def __call__(self, job: Job) -> dict:
        run_dir = self.root / job.study / job.name
        record = {**asdict(job), "run_dir": str(run_dir), "status": "skipped (deadline)"}
        if self._finished(run_dir):
            record["status"] = "done before"
            return record
        typical = float(np.median(self.durations)) if self.durations else 0.0
        if self._remaining() < 1.1 * typical:
            return record
        if not self._dataset(job):
            record["status"] = "dataset build failed"
            return record
        cmd = [
            sys.executable,
            "run.py",
            *job.overrides,
            *job.seed_overrides(),
            *self.run_defaults,
            *self.extra,
            f"hydra.run.dir={run_dir}",
        ]
        t0 = time.monotonic()
        rc = self._run(cmd, run_dir.parent / f"{run_dir.name}.log", self._remaining())
        seconds = time.monotonic() - t0
        if rc == 0:
            self.durations.append(seconds)
        record.update(
            status="done" if rc == 0 else f"failed (rc {rc})", seconds=seconds, command=shlex.join(cmd)
        )
        print(
            f"[{time.strftime('%H:%M:%S')}] {job.study}/{job.name}: {record['status']} in {seconds:.0f} s",
            flush=True,
        )
        self.on_record(record)
        return record

    def run(self, jobs: list[Job]) -> list[dict]:
        if not self.in_process:
            with ThreadPoolExecutor(self.jobs) as pool:
                return list(pool.map(self, jobs))
        try:
            return self._run_in_process(jobs)
        finally:
            shutil.rmtree(self.conf, ignore_errors=True)

    def _run_in_process(self, jobs: list[Job]) -> list[dict]:
        """Each of ``jobs`` worker processes imports the library once and calls train() for run after
        run (on a loaded CPU the imports cost as much as a small training)."""
        records, pending, running = [], list(jobs), {}
        with ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context(self.mp_context)) as pool:
            while pending or running:
                while pending and len(running) < self.jobs:
                    job = pending.pop(0)
                    run_dir = self.root / job.study / job.name
                    record = {**asdict(job), "run_dir": str(run_dir), "status": "skipped (deadline)"}
                    typical = float(np.median(self.durations)) if self.durations else 0.0
                    if self._finished(run_dir):
                        record["status"] = "done before"
                    elif self._remaining() >= 1.1 * typical and self._dataset(job):
                        overrides = [*job.overrides, *job.seed_overrides(), *self.run_defaults, *self.extra]
                        log = run_dir.parent / f"{run_dir.name}.log"
                        future = pool.submit(
                            train_in_process, overrides, str(run_dir), str(log), str(self.conf)
                        )
                        running[future] = (record, time.monotonic(), overrides)
                        continue
                    records.append(record)
                if not running:
                    break
                timeout = None if self.end is None else max(self._remaining(), 0.0)
                done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                if not done:  # the deadline: stop the runs in flight
                    for proc in list(getattr(pool, "_processes", {}).values()):
                        proc.kill()
                    for record, _, _ in running.values():
                        records.append({**record, "status": "killed (deadline)"})
                    break
                for future in done:
                    record, t0, overrides = running.pop(future)
                    seconds = time.monotonic() - t0
                    error = future.exception()
                    if error is None:
                        self.durations.append(seconds)
                    status = "done" if error is None else f"failed ({type(error).__name__}: {error})"
                    record.update(status=status, seconds=seconds, overrides_run=overrides)
                    records.append(record)
                    stamp = time.strftime("%H:%M:%S")
                    print(
                        f"[{stamp}] {record['study']}/{record['name']}: {status} in {seconds:.0f} s",
                        flush=True,
                    )
                    self.on_record(record)
        return records


def train_in_process(overrides: list[str], run_dir: str, log_path: str, conf_dir: str) -> None:
    """``python run.py OVERRIDES`` without a new interpreter: the config, then the library's train().

    Writes ``.hydra/overrides.yaml`` as a Hydra run would, so that reports key runs by what was set.
    """
    import contextlib
    import logging

    from hybrid.tasks import train

    out = Path(run_dir)
    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    (out / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    cfg = load_config([*overrides, f"run_dir={run_dir}"], conf=Path(conf_dir))
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        try:
            train(cfg)
        finally:
            logging.getLogger().removeHandler(handler)
