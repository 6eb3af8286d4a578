"""Benchmarks (`hybrid bench ...`): measured side by side in one run, written to reports/.

``bench_build`` measures the dataset build: labelled candidates per second end to end with the
configured number of worker processes against one process (the baseline), the time of each stage
(simulate, subtract, detect, cut, label), and the time of every registered subtractor on 2048x2048
frames.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hybrid.data.build import STAGES, build_dataset
from hybrid.data.dataset import read_dataset
from hybrid.detection import subtract_background
from hybrid.sim.field import simulate_field
from hybrid.subtraction import SUBTRACTORS, subtractor_names


def _timed_build(cfg: DictConfig, n_fields: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        c = OmegaConf.merge(
            cfg,
            {
                "paths": {"cache_dir": tmp},
                "data": {"n_fields": n_fields, "workers": workers, "progress": False},
            },
        )
        t0 = time.perf_counter()
        path = build_dataset(c)
        wall = time.perf_counter() - t0
        ds = read_dataset(path)
        stages = ds.meta["stage_seconds"]
        n = len(ds)
    return {
        "workers": workers,
        "fields": n_fields,
        "candidates": n,
        "wall_s": wall,
        "candidates_per_s": n / wall,
        "stage_s": {s: stages.get(s, 0.0) for s in STAGES},
    }


def _subtraction_times(cfg: DictConfig, shape: tuple[int, int], repeats: int = 3) -> dict[str, float]:
    survey = instantiate(cfg.survey)
    sim = instantiate(OmegaConf.merge(cfg.sim, {"shape": list(shape), "epochs_per_field": 1}))
    fld = simulate_field(survey, sim, int(cfg.seed), 0)
    science = subtract_background(fld.epochs[0].science)
    out = {}
    for name in subtractor_names():  # ours; the peers are the subtraction benchmark's
        subtractor = SUBTRACTORS.get(name)()
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subtractor.subtract(science, fld.reference)
            runs.append(time.perf_counter() - t0)
        out[name] = statistics.median(runs)
    return out


def run(cfg: DictConfig, *, out_dir: str | Path = "reports", fields: int | None = None) -> Path:
    """Run the build benchmark and write ``bench_build.md`` and ``bench_build.json`` to ``out_dir``."""
    n_fields = fields or 16
    workers = max(int(cfg.data.workers), 2)
    serial = _timed_build(cfg, n_fields, 1)
    parallel = _timed_build(cfg, n_fields, workers)
    sub_times = _subtraction_times(cfg, (2048, 2048))
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "survey": cfg.survey.name,
        "subtraction": OmegaConf.select(cfg, "subtraction._target_"),
        "frame_shape": list(cfg.sim.shape),
        "epochs_per_field": int(cfg.sim.epochs_per_field),
        "serial": serial,
        "parallel": parallel,
        "subtraction_2048_s": sub_times,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_build.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Build benchmark",
        "",
        f"Survey `{result['survey']}`, subtraction `{result['subtraction']}`, "
        f"frames {result['frame_shape']}, {result['epochs_per_field']} epochs per field, {n_fields} fields; "
        f"machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}. "
        "Written by `hybrid bench build`.",
        "",
        "| run | workers | candidates | wall (s) | labelled candidates / s |",
        "|---|---|---|---|---|",
    ]
    for label, r in (("baseline: one process", serial), ("parallel build", parallel)):
        rate = r["candidates_per_s"]
        lines.append(f"| {label} | {r['workers']} | {r['candidates']} | {r['wall_s']:.1f} | {rate:.0f} |")
    total = sum(serial["stage_s"].values())
    lines += [
        "",
        "Time per stage (summed over fields, one process), and what each stage alone would sustain:",
        "",
        "| stage | s | share | candidates / s |",
        "|---|---|---|---|",
    ]
    for s in STAGES:
        t = serial["stage_s"][s]
        lines.append(f"| {s} | {t:.2f} | {t / total:.0%} | {serial['candidates'] / max(t, 1e-9):.0f} |")
    lines += ["", "Subtraction of one 2048x2048 pair (median of 3):", "", "| subtractor | s |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in sub_times.items()]
    md = out_dir / "bench_build.md"
    md.write_text("\n".join(lines) + "\n")
    return md
