"""Kill -9 trials: a command is started, killed with SIGKILL at seeded random moments, restarted on the
same output each time, finally run to the end, and what it wrote is compared with an uninterrupted
run's: identical dataset bytes (``hybrid build``), the same scored rows with no row missing or twice
(``hybrid predict``), identical weights (training). Used by tests/test_reliability_kill.py and
tests/reliability_report.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import SMALL
from tests.test_readers import records
from tests.test_training import TINY, _train_command

ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
#: meta.json fields that say when and how fast a build ran, not what it built
VOLATILE_META = ("stage_seconds", "created_utc")


@dataclass
class Trial:
    """One kill/resume comparison."""

    entry: str
    kill_at_s: list[float]  # seconds after each start
    killed: int = 0  # how many of the kills hit a running process
    at_kill: list[str] = field(default_factory=list)  # what had been written when each kill landed
    identical: bool = False
    detail: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def run(cmd: list[str], *, timeout: float = 600) -> float:
    """Run ``cmd`` to the end (raising on failure); returns its wall time (s)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]}... failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - start


def kill_after(cmd: list[str], seconds: float) -> bool:
    """Start ``cmd``, SIGKILL it after ``seconds``; True when it was still running then."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def kill_resume(
    entry: str, cmd: list[str], baseline_s: float, seed: int, kills: int, state: Callable[[], str]
) -> Trial:
    """Kill ``cmd`` ``kills`` times at random moments within its baseline duration (``state()`` says
    what had been written at each), then run it to the end."""
    rng = random.Random(seed)
    # after the interpreter's start-up (about a third of these short runs) and before the end
    points = sorted(round(rng.uniform(0.4, 1.0) * baseline_s, 2) for _ in range(kills))
    trial = Trial(entry, points)
    for t in points:
        trial.killed += kill_after(cmd, t)
        trial.at_kill.append(state())
    trial.seconds["resume"] = run(cmd)
    trial.seconds["baseline"] = baseline_s
    return trial


# ----------------------------------------------------------------------------------- hybrid build


def build_command(cache: Path) -> list[str]:
    overrides = [*SMALL, "data.n_fields=4", f"paths.cache_dir={cache}"]
    return [sys.executable, "-m", "hybrid.cli", "build", *overrides]


def dataset_fingerprint(cache: Path) -> dict[str, object]:
    """The bytes of the built dataset's files; meta.json without its timings and date, and with the
    cache directory (which differs between the runs compared) replaced by a placeholder."""
    (path,) = [p for p in (cache / "datasets").iterdir() if p.is_dir() and not p.name.endswith(".shards")]
    meta = json.loads((path / "meta.json").read_text())

    def strip(d: object) -> object:
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if k not in VOLATILE_META}
        return d

    return {
        "candidates.parquet": (path / "candidates.parquet").read_bytes(),
        "stamps.npy": (path / "stamps.npy").read_bytes(),
        "meta.json": json.dumps(strip(meta), sort_keys=True).replace(str(cache), "<cache>"),
    }


def build_trial(work: Path, seed: int, kills: int = 3) -> Trial:
    base = run(build_command(work / "whole"))
    shards = work / "killed" / "datasets"

    def state() -> str:
        if any(
            (p / "meta.json").is_file() for p in shards.glob("*") if not p.name.endswith((".shards", ".lock"))
        ):
            return "dataset merged"
        done = [p for p in shards.glob("*.shards/fields-*") if (p / "meta.json").is_file()]
        return f"{len(done)} of 4 shards"

    trial = kill_resume("hybrid build", build_command(work / "killed"), base, seed, kills, state)
    a, b = dataset_fingerprint(work / "whole"), dataset_fingerprint(work / "killed")
    differ = [k for k in a if a[k] != b[k]]
    trial.identical = not differ
    trial.detail = (
        "candidates.parquet, stamps.npy, meta.json identical" if not differ else f"differ: {differ}"
    )
    return trial


# --------------------------------------------------------------------------------- hybrid predict


def alerts_file(path: Path, copies: int = 20) -> Path:
    """The six fixture alerts ``copies`` times with distinct candids (a night of 6 x copies alerts)."""
    rows = []
    for k in range(copies):
        for rec in records():
            rec["candid"] = rec["candidate"]["candid"] = 10_000 * (k + 1) + len(rows)
            rows.append(rec)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def predict_command(bundle: Path, inputs: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "hybrid.cli", "predict", str(bundle), str(inputs), "--out", str(out),
        "--batch-size", "4", "--workers", "1",
    ]  # fmt: skip


def compare_scores(whole: Path, other: Path) -> tuple[bool, str]:
    a, b = pd.read_parquet(whole), pd.read_parquet(other)
    keys = ["source", "alert_id"]
    dup, missing = int(b.duplicated(keys).sum()), len(set(a["alert_id"]) - set(b["alert_id"]))
    if dup or missing or len(a) != len(b):
        return False, f"{len(b)} rows for {len(a)}: {missing} missing, {dup} twice"
    a, b = (t.sort_values("alert_id").reset_index(drop=True) for t in (a, b))
    same = a.equals(b[a.columns])
    return same, f"{len(b)} rows, none missing or twice, " + ("scores identical" if same else "scores DIFFER")


def predict_trial(work: Path, bundle: Path, seed: int, kills: int = 3) -> Trial:
    inputs = alerts_file(work / "night.parquet")
    base = run(predict_command(bundle, inputs, work / "whole.parquet"))
    killed = work / "killed.parquet"

    def state() -> str:
        parts = list(killed.parent.glob(killed.name + ".parts/part-*.parquet"))
        merged = pq.ParquetFile(killed).metadata.num_rows if killed.is_file() else 0
        return f"{merged} rows merged, {sum(pq.ParquetFile(p).metadata.num_rows for p in parts)} in parts"

    trial = kill_resume("hybrid predict", predict_command(bundle, inputs, killed), base, seed, kills, state)
    trial.identical, trial.detail = compare_scores(work / "whole.parquet", killed)
    return trial


def concurrent_predict_trial(work: Path, bundle: Path) -> Trial:
    """Two ``hybrid predict`` processes on the same inputs and output at once: the same rows, once."""
    inputs = alerts_file(work / "night.parquet")
    if not (work / "whole.parquet").exists():
        run(predict_command(bundle, inputs, work / "whole.parquet"))
    out = work / "shared.parquet"
    cmd = predict_command(bundle, inputs, out)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV) for _ in range(2)]
    for p in procs:  # communicate: read both pipes to the end and close them
        p.communicate(timeout=600)
    codes = [p.returncode for p in procs]
    trial = Trial("two hybrid predict on one --out", [])
    same, detail = compare_scores(work / "whole.parquet", out)
    trial.identical = same and codes == [0, 0]
    trial.detail = f"exit {codes}; {detail}"
    return trial


# -------------------------------------------------------------------------------------- training


def train_trial(work: Path, seed: int, kills: int = 3) -> Trial:
    import torch

    from hybrid.cli import load_config
    from hybrid.data.build import build_dataset

    cache = work / "cache"
    build_dataset(load_config([*TINY, f"paths.cache_dir={cache}"]))
    base = run(_train_command(cache, work / "whole"))
    last = work / "killed" / "checkpoints" / "last.ckpt"

    def state() -> str:
        return (
            f"last.ckpt at epoch {torch.load(last, weights_only=False)['epoch']}"
            if last.exists()
            else "no checkpoint"
        )

    trial = kill_resume("training", _train_command(cache, work / "killed"), base, seed, kills, state)
    a = torch.load(work / "whole" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(work / "killed" / "checkpoints" / "last.ckpt", weights_only=False)
    differ = [k for k, v in a["state_dict"].items() if not torch.equal(v, b["state_dict"][k])]
    trial.identical = a["epoch"] == b["epoch"] and not differ
    trial.detail = (
        f"epoch {b['epoch']}, all {len(a['state_dict'])} tensors identical"
        if trial.identical
        else f"epochs {a['epoch']}/{b['epoch']}, {len(differ)} tensors differ"
    )
    return trial


TRIALS: dict[str, Callable[..., Trial]] = {
    "hybrid build": build_trial,
    "hybrid predict": predict_trial,
    "training": train_trial,
}
