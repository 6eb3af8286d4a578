"""`hybrid bench pipeline`: time per frame pair of `hybrid pipeline` on 1024x1024 and 4096x4096 frames.

For each size one simulated field (one science epoch) is written as FITS, then two arms run
interleaved, ``repeats`` times each, and their medians are reported with the per-stage times:

* baseline -- the build's per-pair work (:func:`hybrid.data.frames.pair_candidates` and context) on
  the simulated exposures in memory, with the simulator's PSF models and zero points;
* pipeline -- :func:`hybrid.pipeline.process_pair` on the FITS files: read, mask, sky, PSFs from the
  stars, then the same subtraction, detection, stamps, features and context.

The reprojection of the reference (taken when the WCSs differ) is timed on its own, on the same
reference given a WCS shifted by a fraction of a pixel. The machine's load average is recorded
before and after every run; the machine is shared, so compare arms within one report only.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hybrid.data.fits import write_field
from hybrid.data.frames import StageTimer, pair_candidates, with_context
from hybrid.data.real_frames import reproject_onto
from hybrid.pipeline import STAGES, FramePair, process_pair
from hybrid.sim.field import simulate_field

SIZES = (1024, 4096)


def _baseline(cfg: DictConfig, fld: Any) -> tuple[float, dict[str, float], int]:
    survey = instantiate(cfg.survey)
    context = instantiate(cfg.context) if cfg.get("context") else None
    timer = StageTimer()
    t0 = time.perf_counter()
    kb = context.knowledge_base(fld.catalog) if context is not None else None
    pair = pair_candidates(
        fld.epochs[0].science,
        fld.reference,
        subtractor=instantiate(cfg.subtraction),
        detector=instantiate(cfg.detection),
        stamp_size=int(cfg.data.stamp_size),
        fill_value=float(cfg.data.fill_value),
        pixel_scale=survey.pixel_scale,
        catalog=fld.catalog,
        psf_fit_errors=survey.psf_fit_errors,
        timer=timer,
    )
    table = with_context(pair.candidates, context, kb, timer)
    return time.perf_counter() - t0, dict(timer.seconds), len(table)


def _pipeline(cfg: DictConfig, pair: FramePair) -> tuple[float, dict[str, float], int]:
    t0 = time.perf_counter()
    products = process_pair(cfg, pair)
    return time.perf_counter() - t0, products.seconds, len(products.candidates)


def _load() -> float:
    return os.getloadavg()[0]


def _size(cfg: DictConfig, n: int, repeats: int, tmp: Path) -> dict[str, Any]:
    c = OmegaConf.merge(cfg, {"sim": {"shape": [n, n], "epochs_per_field": 1}})
    fld = simulate_field(instantiate(c.survey), instantiate(c.sim), int(c.data.seed), 0)
    directory = tmp / f"field-{n}"
    write_field(fld, directory)
    pair = FramePair.of(*(directory / f for f in ("science_epoch0.fits", "reference.fits", "catalog.fits")))
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "pipeline": []}
    for _ in range(repeats):  # interleaved, so that a change of load hits both arms alike
        for arm, fn in (("baseline", lambda: _baseline(c, fld)), ("pipeline", lambda: _pipeline(c, pair))):
            before = _load()
            wall, stages, candidates = fn()
            runs[arm].append(
                {"wall_s": wall, "stage_s": stages, "candidates": candidates, "load": [before, _load()]}
            )
    shifted = fld.reference.wcs.deepcopy()
    shifted.wcs.crpix = np.add(shifted.wcs.crpix, (0.37, -0.21))  # a fraction of a pixel
    moved = replace(fld.reference, wcs=shifted)
    reproject_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reproject_onto(moved, fld.epochs[0].science)
        reproject_s.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"shape": [n, n], "reproject_s": statistics.median(reproject_s)}
    for arm, rs in runs.items():
        out[arm] = {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "stage_s": {s: statistics.median(r["stage_s"].get(s, 0.0) for r in rs) for s in STAGES},
            "candidates": rs[0]["candidates"],
            "runs": rs,
        }
    return out


def run(cfg: DictConfig, *, out_dir: str | Path = "reports", fields: int | None = None) -> Path:
    """Run the benchmark (``fields``: repeats per arm at 1024x1024, default 3; 2 at 4096x4096) and
    write ``bench_pipeline.md`` and ``bench_pipeline.json`` to ``out_dir``."""
    repeats = fields or 3
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [_size(cfg, n, repeats if n <= 1024 else max(1, min(repeats, 2)), Path(tmp)) for n in SIZES]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        },
        "survey": cfg.survey.name,
        "subtraction": OmegaConf.select(cfg, "subtraction._target_"),
        "sizes": sizes,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_pipeline.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    header = " | ".join(f"{s} (s)" for s in STAGES)
    lines = [
        "# Pipeline benchmark: one real-frame pair",
        "",
        f"Survey `{result['survey']}`, subtraction `{result['subtraction']}`, one science frame against its "
        f"reference; machine: {m['cpus']} CPUs ({m['platform']}), shared with other jobs (1-minute load "
        "average before and after each run below). Written by `hybrid bench pipeline`. Baseline: the "
        "build's per-pair work on the simulated exposures in memory (model PSFs, no I/O); pipeline: "
        "`hybrid pipeline`'s per-pair work from the FITS files (read, mask, sky, PSFs estimated from the "
        "stars, the same subtraction, detection, stamps, features and context). Medians of interleaved runs.",
        "",
        f"| frame | arm | runs | candidates | wall (s) | {header} | load |",
        "|---|---|---|---|---|" + "---|" * len(STAGES) + "---|",
    ]
    for size in sizes:
        n = size["shape"][0]
        for arm in ("baseline", "pipeline"):
            r = size[arm]
            loads = [x for run in r["runs"] for x in run["load"]]
            stages = " | ".join(f"{r['stage_s'][s]:.2f}" for s in STAGES)
            lines.append(
                f"| {n}x{n} | {arm} | {len(r['runs'])} | {r['candidates']} | {r['wall_s']:.2f} | {stages} "
                f"| {min(loads):.1f}-{max(loads):.1f} |"
            )
    lines += [
        "",
        "Reprojection of the reference onto the science grid (`reproject_interp`, bilinear, image, "
        "variance and mask), when the WCSs differ; not part of the runs above:",
        "",
        "| frame | reproject (s) |",
        "|---|---|",
    ]
    lines += [f"| {s['shape'][0]}x{s['shape'][1]} | {s['reproject_s']:.2f} |" for s in sizes]
    md = out_dir / "bench_pipeline.md"
    md.write_text("\n".join(lines) + "\n")
    return md
