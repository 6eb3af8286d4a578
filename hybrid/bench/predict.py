"""`hybrid bench predict`: alerts per second of an export bundle, end to end, against a braai baseline.

Input: real ZTF alerts (the 51 of fink-science 7.4.0 when ``python -m datasets.fink_alerts`` has
fetched them, else the 6 of ``tests/fixtures/ztf_alerts``), repeated to ``256 * fields`` alerts
(default 40 batches) in a Parquet file of Fink's layout: gzipped FITS cutouts, nested candidates.

Measured in one run, on the same machine load:

* end to end: :meth:`hybrid.serving.Predictor.predict_to_parquet` from the Parquet file to a scores
  file (read, gunzip + FITS parse, field mapping, stamp normalisation, onnxruntime, write), 2 worker
  processes (and, for the default bundle, 2 worker threads), batches of 256, after a warm-up run;
  for the default bundle and for a braai bundle;
* the stages one by one, single-threaded, per alert: read, decode, preprocess, model;
* the model step at batch 256 on normalised stamps: the default bundle's graph and the braai
  architecture (Duev et al. 2019; :func:`hybrid.bench.train.braai_baseline`) in onnxruntime (one
  session, 2 intra-op threads) and braai in eager PyTorch (2 threads), in interleaved rounds (median);
* the default bundle exported with rotation averaging (8 views), model step only, for reference.

The default bundle is the export of a trained run when ``+bench.run=RUN_DIR`` is given, else of the
default config's model untrained (the same graph, so the same speed).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import DictConfig

from hybrid.bench.train import braai_baseline
from hybrid.data.readers import read_alerts
from hybrid.data.readers.ztf import CUTOUTS, ZtfParquetReader
from hybrid.export import ServingModel, export_model, export_run, load_bundle
from hybrid.export.preprocess import feature_matrix, normalize_stamps
from hybrid.serving import Predictor
from hybrid.taxonomy import TRANSIENT_TYPES

BATCH = 256
ROUNDS = 5
FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "ztf_alerts" / "alerts.parquet"


def alert_source(cache_dir: str | Path) -> tuple[Path, str]:
    """The fink-science alerts when fetched, else the committed fixture; and a description."""
    from hybrid.data.readers.recipes import FINK_VERSION, fink_dir

    fink = fink_dir(cache_dir) / "alerts.parquet"
    if fink.is_file():
        return fink, f"the 51 real ZTF alerts of fink-science {FINK_VERSION}"
    return FIXTURE, "the 6 real ZTF alerts of tests/fixtures/ztf_alerts"


def repeated_alerts(src: Path, n: int, out: Path) -> Path:
    """``n`` alerts cycling through ``src``'s, with unique candids, as one Parquet file."""
    table = pq.read_table(src, columns=["objectId", "candid", "candidate", *CUTOUTS.values()])
    idx = np.arange(n) % table.num_rows
    rep = table.take(pa.array(idx))
    rep = rep.set_column(
        rep.schema.get_field_index("candid"), "candid", pa.array(np.arange(n, dtype=np.int64))
    )
    pq.write_table(rep, out, row_group_size=4096)
    return out


def _default_bundles(
    cfg: DictConfig, out: Path, golden: tuple[np.ndarray, pd.DataFrame]
) -> tuple[Path, Path, str]:
    """The default bundle, the same exported with rotation averaging, and where they come from."""
    run = (cfg.get("bench") or {}).get("run")
    if run:
        single = export_run(run, out / "default")
        return single, export_run(run, out / "default_tta", rotation_average=True), f"trained run `{run}`"
    from hydra.utils import instantiate

    from hybrid.detection.features import FEATURE_UNITS
    from hybrid.training.train import make_model

    context = instantiate(cfg.context).feature_units() if cfg.get("context") else {}
    features = {**FEATURE_UNITS, **context}
    model = make_model(cfg, in_chans=3, feature_names=list(features)).eval()
    single = _bundle(ServingModel(model), out / "default", features, golden)
    tta = _bundle(ServingModel(model, rotation_average=True), out / "default_tta", features, golden)
    return single, tta, "the default config's model, untrained (the same graph as a trained one)"


def _bundle(module, out: Path, features: dict[str, str], golden: tuple[np.ndarray, pd.DataFrame]) -> Path:
    stamps, table = golden
    return export_model(
        module,
        out,
        channels=["sci", "ref", "diff"],
        stamp_size=stamps.shape[-1],
        features=features,
        golden_stamps=stamps,
        golden_features=feature_matrix(table, list(features)),
        labels=list(TRANSIENT_TYPES),
    )


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def end_to_end(bundle: Path, alerts: Path, n: int, work: Path, backend: str, repeats: int = 3) -> dict:
    """Median alerts/s of ``predict_to_parquet`` over ``repeats`` runs (2 workers, batches of 256)
    after a warm-up run, and the CPU time per alert of all processes and threads, which other
    processes' load changes much less than the wall-clock rate."""
    rates, cpu = [], []
    with Predictor(bundle, workers=2, batch_size=BATCH, backend=backend) as predictor:
        predictor.predict_to_parquet([alerts], work / f"warm-{bundle.name}-{backend}.parquet")
        for i in range(repeats):
            out = work / f"scores-{bundle.name}-{backend}-{i}.parquet"
            w0, c0, t0 = predictor.worker_cpu_seconds, time.process_time(), time.perf_counter()
            summary = predictor.predict_to_parquet([alerts], out)
            rates.append(_rate(summary.scored, time.perf_counter() - t0))
            seconds = time.process_time() - c0 + predictor.worker_cpu_seconds - w0
            cpu.append(seconds * 1e6 / summary.scored)
            if summary.scored != n:
                raise RuntimeError(f"scored {summary.scored} of {n} alerts: {summary}")
    us = statistics.median(cpu)
    return {
        "alerts_per_s": statistics.median(rates),
        "runs": rates,
        "cpu_us_per_alert": us,
        "alerts_per_s_on_2_idle_cores_from_cpu_time": 2e6 / us,
    }


def stages(bundle: Path, alerts: Path) -> dict:
    """Single-threaded microseconds per alert of each stage, on one batch of 256."""
    b = load_bundle(bundle, threads=1)
    chunk = next(ZtfParquetReader().chunks(alerts, BATCH))
    timings: dict[str, list[float]] = {"read": [], "decode": [], "preprocess": [], "model_1_thread": []}
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        chunk = next(ZtfParquetReader().chunks(alerts, BATCH))
        t1 = time.perf_counter()
        batch = chunk.decode(b.stamp_size)
        t2 = time.perf_counter()
        feeds = b.inputs(batch.stamps, b.feature_matrix(batch.candidates))
        t3 = time.perf_counter()
        b.session.run(None, feeds)
        t4 = time.perf_counter()
        for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            timings[key].append(dt * 1e6 / BATCH)
    return {k: statistics.median(v) for k, v in timings.items()}


def model_steps(
    graphs: dict[str, tuple[object, dict]], eager: dict[str, tuple[torch.nn.Module, tuple]]
) -> dict:
    """Median alerts/s of each graph (onnxruntime session + feeds) and eager module, interleaved."""
    speeds: dict[str, list[float]] = {name: [] for name in [*graphs, *eager]}
    for _ in range(ROUNDS):
        for name, (session, feeds) in graphs.items():
            session.run(None, feeds)
            t0 = time.perf_counter()
            for _ in range(3):
                session.run(None, feeds)
            speeds[name].append(_rate(3 * BATCH, time.perf_counter() - t0))
        for name, (module, args) in eager.items():
            with torch.no_grad():
                t0 = time.perf_counter()
                module(*args)
                speeds[name].append(_rate(BATCH, time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in speeds.items()}


def run(cfg: DictConfig, *, out_dir: str | Path = "reports", fields: int | None = None) -> Path:
    """Write ``bench_predict.md`` and ``bench_predict.json``; ``fields`` batches of 256 alerts (40)."""
    torch.set_num_threads(2)
    load_before = os.getloadavg()
    n = BATCH * (fields or 40)
    src, described = alert_source(cfg.paths.cache_dir)
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    try:
        alerts = repeated_alerts(src, n, work / "alerts.parquet")
        real = read_alerts(src)
        golden = (real.stamps[:8], real.candidates.iloc[:8])
        default, tta_bundle, default_from = _default_bundles(cfg, work, golden)
        braai = braai_baseline(3, 63).eval()
        braai_bundle = _bundle(ServingModel(braai), work / "braai", {}, golden)

        e2e = {
            "default": end_to_end(default, alerts, n, work, "process"),
            "default_threads": end_to_end(default, alerts, n, work, "thread"),
            "braai": end_to_end(braai_bundle, alerts, n, work, "process"),
        }
        stage = {"default": stages(default, alerts), "braai": stages(braai_bundle, alerts)}

        # model step at batch 256 on normalised stamps of real alerts
        idx = np.arange(BATCH) % len(real)
        stamps, table = real.stamps[idx], real.candidates.iloc[idx]
        graphs = {}
        for name, path in (
            ("default_onnxruntime", default),
            ("braai_onnxruntime", braai_bundle),
            ("default_rotation_average_onnxruntime", tta_bundle),
        ):
            b = load_bundle(path, threads=2)
            graphs[name] = (b.session, b.inputs(stamps, b.feature_matrix(table)))
        braai_in = torch.from_numpy(normalize_stamps(stamps, mode="l2", crop=None))
        eager = {"braai_eager_pytorch": (lambda x: braai(x, None, stamps_normalized=True), (braai_in,))}
        steps = model_steps(graphs, eager)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    import onnxruntime

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "niceness": os.nice(0),
            "autogroup_nice": _autogroup_nice(),
            "load_average_1_5_15_min_before": [round(x, 2) for x in load_before],
            "load_average_1_5_15_min_after": [round(x, 2) for x in load_after],
        },
        "alerts": {"source": described, "n": n, "batch": BATCH},
        "default_bundle": default_from,
        "end_to_end_alerts_per_s": e2e,
        "stages_us_per_alert_single_thread": stage,
        "model_step_alerts_per_s_batch_256": steps,
        "goals": {
            "end_to_end_default_ge_3000_per_s": e2e["default"]["alerts_per_s"] >= 3000,
            "model_step_default_over_braai_onnxruntime": steps["default_onnxruntime"]
            / steps["braai_onnxruntime"],
            "model_step_ge_1_5x_braai_onnxruntime": steps["default_onnxruntime"]
            >= 1.5 * steps["braai_onnxruntime"],
        },
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_predict.json").write_text(json.dumps(result, indent=2))
    (out / "bench_predict.md").write_text(_markdown(result))
    return out / "bench_predict.md"


def _autogroup_nice() -> int | None:
    """The nice value of this process's scheduler autogroup (Linux), which is what weighs it against
    other sessions' processes when autogrouping is on; None elsewhere."""
    try:
        return int(Path("/proc/self/autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


def _priority_note(m: dict) -> str:
    parts = [f"niceness {m['niceness']}" if m["niceness"] else ""]
    if m.get("autogroup_nice"):
        parts.append(f"scheduler autogroup at nice {m['autogroup_nice']}, so this run had most of the CPU")
    text = "; ".join(p for p in parts if p)
    return f" (this run: {text})." if text else "."


def _markdown(r: dict) -> str:
    m, e, s, st, g = (
        r["machine"],
        r["end_to_end_alerts_per_s"],
        r["model_step_alerts_per_s_batch_256"],
        r["stages_us_per_alert_single_thread"],
        r["goals"],
    )
    lines = [
        "# Prediction benchmark",
        "",
        f"Written by `hybrid bench predict`: {m['cpus']} CPUs, onnxruntime {m['onnxruntime']}, "
        f"torch {m['torch']}. "
        f"Load average (1, 5, 15 min) {m['load_average_1_5_15_min_before']} before and "
        f"{m['load_average_1_5_15_min_after']} after the run; other processes shared the CPU"
        + _priority_note(m),
        "",
        f"Input: {r['alerts']['n']:,} alerts cycling through {r['alerts']['source']}, in Fink's "
        f"Parquet layout (gzipped FITS cutouts). Default bundle: {r['default_bundle']}.",
        "",
        "## End to end (Parquet alerts -> scores.parquet; 2 workers, batches of 256)",
        "",
        "| bundle | alerts/s (median of 3) | CPU us per alert (all threads) | 2 cores / CPU time |",
        "|---|---|---|---|",
        *(
            f"| {label} | {e[k]['alerts_per_s']:,.0f} | {e[k]['cpu_us_per_alert']:.0f} | "
            f"{e[k]['alerts_per_s_on_2_idle_cores_from_cpu_time']:,.0f} |"
            for label, k in (
                ("default (fused), 2 worker processes", "default"),
                ("default (fused), 2 worker threads", "default_threads"),
                ("braai baseline, 2 worker processes", "braai"),
            )
        ),
        "",
        "The last column is the rate two otherwise idle cores would sustain at the measured CPU time per "
        "alert; the wall-clock rate depends on what else ran.",
        "",
        "## Stages, single-threaded (us per alert, batch of 256)",
        "",
        "| bundle | read | decode (gunzip + FITS + fields) | preprocess | model |",
        "|---|---|---|---|---|",
    ]
    for name in ("default", "braai"):
        t = st[name]
        cells = " | ".join(f"{t[k]:.1f}" for k in ("read", "decode", "preprocess", "model_1_thread"))
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "## Model step (batch 256, normalised stamps; onnxruntime: one session, 2 threads)",
        "",
        "| model | alerts/s |",
        "|---|---|",
    ]
    lines += [f"| {name} | {v:,.0f} |" for name, v in s.items()]
    lines += [
        "",
        "## Goals",
        "",
        f"- Default bundle end to end >= 3,000 alerts/s: "
        f"{'met' if g['end_to_end_default_ge_3000_per_s'] else 'not met'} "
        f"({e['default']['alerts_per_s']:,.0f}).",
        f"- Model step >= 1.5x the onnxruntime braai baseline: "
        f"{'met' if g['model_step_ge_1_5x_braai_onnxruntime'] else 'not met'} "
        f"({g['model_step_default_over_braai_onnxruntime']:.2f}x).",
    ]
    return "\n".join(lines) + "\n"
