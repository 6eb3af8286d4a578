"""`hybrid bench real`: an export bundle on the 586 real ZTF alerts of fink-science 7.4.0.

The alerts (:data:`hybrid.data.readers.recipes.FINK_ALERT_FILES`, fetched into the cache on first use)
are read with :mod:`hybrid.data.readers` and scored with :class:`hybrid.serving.Predictor`; the
weak-label metrics are :func:`hybrid.evaluation.real_alerts.real_alert_metrics` (AUC against ZTF's
``drb`` with a bootstrap interval, ZTF's ``rb`` and ``drb`` as reference rows, Spearman with ``drb``,
recall on catalogued AGN, variable stars and known solar-system objects, types assigned per file).

Catalogued classes come from what the alerts carry plus one catalog of the same package: Fink's
SIMBAD cross-match ``cdsxmatch`` (only the CTAO blazar file has it), mapped to AGN or variable star
with :func:`hybrid.evaluation.real_alerts.simbad_class`, and the ZTF object ids of the CTAO blazar
catalog (``catalogs/CTAO_blazars_ztf_dr22.parquet``), which count as AGN.

The bundle is ``--bundle`` or, by default, the export of the newest finished quickstart run under
``outputs/`` (what ``python run.py`` writes; exported into ``<run>/export/`` on first use).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig

from hybrid.data.readers import read_alerts
from hybrid.data.readers.recipes import FINK_ALERT_FILES, FINK_VERSION, fetch_fink_alerts
from hybrid.evaluation.real_alerts import (
    DRB_BOGUS,
    DRB_REAL,
    SSO_RADIUS_ARCSEC,
    plot_score_histograms,
    real_alert_metrics,
    simbad_class,
)

DEFAULT_OUT = Path("reports/real_ztf")
RUNS_DIR = Path("outputs")


class BenchError(RuntimeError):
    """What is missing to run the benchmark, and what to run to get it."""


def newest_quickstart_run(runs_dir: Path = RUNS_DIR) -> Path:
    """The newest run directory under ``runs_dir`` with a ``metrics.json`` (finished) and a checkpoint,
    made with ``experiment=quickstart`` (the default of ``python run.py``)."""
    found = []
    for metrics in runs_dir.rglob("metrics.json") if runs_dir.is_dir() else []:
        run = metrics.parent
        hydra = run / ".hydra" / "hydra.yaml"
        if "wandb" in run.parts or not hydra.is_file() or not (run / "checkpoints").is_dir():
            continue
        choices = yaml.safe_load(hydra.read_text())["hydra"]["runtime"]["choices"]
        if choices.get("experiment") == "quickstart" and choices.get("task", "train") == "train":
            found.append((metrics.stat().st_mtime, run))
    if not found:
        raise BenchError(
            f"no finished quickstart run under {runs_dir.resolve()}/: run `python run.py` first "
            "(a few minutes), or pass --bundle BUNDLE (from `hybrid export RUN_DIR --out BUNDLE`)"
        )
    return max(found)[1]


def default_bundle(runs_dir: Path = RUNS_DIR) -> tuple[Path, str]:
    """The bundle of the newest quickstart run (exported on first use) and a description."""
    from hybrid.export import export_run

    run = newest_quickstart_run(runs_dir)
    bundle = run / "export"
    if not (bundle / "manifest.json").is_file():
        export_run(run, bundle)
    return bundle, f"the export of the newest quickstart run `{run}`"


def bundle_threshold(bundle: Path) -> float:
    """The operating threshold of the bundle's training config (``train.threshold``; 0.5 if absent)."""
    config = bundle / "config.yaml"
    cfg = yaml.safe_load(config.read_text()) if config.is_file() else {}
    return float(((cfg or {}).get("train") or {}).get("threshold", 0.5))


def catalog_classes(alert_files: list[Path], blazar_catalog: Path | None) -> pd.DataFrame:
    """``source``, ``alert_id``, ``cdsxmatch`` and ``catalog_class`` of every alert of the files.

    The class is AGN when the object is in the CTAO blazar catalog, else that of Fink's
    ``cdsxmatch`` (:func:`simbad_class`; empty when the file has no such column).
    """
    import pyarrow.parquet as pq

    blazars: set[str] = set()
    if blazar_catalog is not None and blazar_catalog.is_file():
        names = pd.read_parquet(blazar_catalog, columns=["ZTF Name"])["ZTF Name"]
        blazars = {str(n).strip() for n in names if isinstance(n, str) and n.strip()}
    frames = []
    for path in alert_files:
        schema = pq.ParquetFile(path).schema_arrow.names
        cols = [c for c in ("objectId", "candid", "cdsxmatch") if c in schema]
        t = pq.read_table(path, columns=cols).to_pandas()
        xmatch = t["cdsxmatch"] if "cdsxmatch" in t else pd.Series([None] * len(t))
        cls = [simbad_class(x) for x in xmatch]
        cls = ["agn" if o in blazars else c for o, c in zip(t["objectId"], cls, strict=True)]
        frames.append(
            pd.DataFrame(
                {
                    "source": str(path),
                    "alert_id": t["candid"].astype(str),
                    "cdsxmatch": xmatch.to_numpy(),
                    "catalog_class": cls,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def score_alerts(bundle: Path, alert_files: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """Every alert's ids, ZTF extras (``ztf_rb``, ``ztf_drb``, ``ztf_ssdistnr``) and the bundle's
    outputs; and the bundle's types."""
    from hybrid.serving import Predictor

    with Predictor(bundle, workers=1) as predictor:
        batch = read_alerts(alert_files, stamp_size=predictor.stamp_size)
        if batch.rejected:
            raise BenchError("; ".join(str(r) for r in batch.rejected[:5]))
        scores = predictor.score(batch)
        types = predictor.types
    extras = batch.candidates[[c for c in batch.candidates if c.startswith("ztf_")]]
    return pd.concat([scores, extras.reset_index(drop=True)], axis=1), types


def run(
    cfg: DictConfig,
    *,
    out_dir: str | Path = DEFAULT_OUT,
    fields: int | None = None,
    bundle: str | Path | None = None,
) -> Path:
    """Write ``<out>.md``, ``<out>.json`` and ``<out>_scores.png`` (``out_dir`` is the stem, default
    reports/real_ztf); ``fields`` is not used."""
    del fields
    out = Path(out_dir)
    if bundle is None:
        bundle, described = default_bundle()
    else:
        bundle, described = Path(bundle), f"`{bundle}`"
    paths = fetch_fink_alerts(cfg.paths.cache_dir)
    files = [paths[name] for name in FINK_ALERT_FILES]
    table, types = score_alerts(Path(bundle), files)
    classes = catalog_classes(files, paths.get("ctao_blazar_catalog"))
    table = table.merge(classes, on=["source", "alert_id"], how="left", validate="one_to_one")
    threshold = bundle_threshold(Path(bundle))
    result = real_alert_metrics(table, types=types, threshold=threshold, seed=int(cfg.get("seed", 0)))
    plot = plot_score_histograms(table, out.with_name(out.name + "_scores.png"), threshold=threshold)
    result = {
        "bundle": str(bundle),
        "bundle_described": described,
        "alerts": {
            "source": f"fink-science {FINK_VERSION}, fink_science/data/alerts/",
            "files": {Path(f).name: int((table["source"] == str(f)).sum()) for f in files},
        },
        "catalog_classes_from": "Fink cdsxmatch (SIMBAD type) where the file has it; CTAO blazar "
        "catalog ZTF ids -> agn",
        "cdsxmatch_counts": table["cdsxmatch"].dropna().value_counts().to_dict(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **result,
        "plot": plot.name,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_name(out.name + ".json")
    json_path.write_text(json.dumps(result, indent=2, default=_json_default))
    md = out.with_name(out.name + ".md")
    md.write_text(markdown(result))
    return md


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def markdown(r: dict) -> str:
    """The report of :func:`run`'s result."""
    n_files = ", ".join(f"`{k}` ({v})" for k, v in r["alerts"]["files"].items())
    lines = [
        "# Real ZTF alerts: the model against ZTF's own real-bogus scores",
        "",
        f"Written by `hybrid bench real`. Bundle: {r['bundle_described']}. Alerts: {r['n_alerts']} real "
        f"ZTF alerts of {r['alerts']['source']}: {n_files}. They have no truth; ZTF's deep real-bogus "
        f"score `drb` (Duev et al. 2019) is the weak label: drb > {DRB_REAL} real "
        f"({r['n_weak_real']}), drb < {DRB_BOGUS} bogus ({r['n_weak_bogus']}), the "
        f"{r['n_excluded']} in between left out. 95% intervals: percentile bootstrap over alerts, "
        f"{r['n_boot']} draws, seeded.",
        "",
        "| scores | AUC vs drb weak labels (95% CI) | Spearman with drb (all alerts) |",
        "|---|---|---|",
        f"| this model | {_f(r['auc_vs_drb'])} ({_f(r['auc_vs_drb_ci'][0])}-{_f(r['auc_vs_drb_ci'][1])}) "
        f"| {_f(r['spearman_drb'])} |",
        f"| ZTF `rb` (random forest; reference) | {_f(r['rb_auc_vs_drb'])} "
        f"({_f(r['rb_auc_vs_drb_ci'][0])}-{_f(r['rb_auc_vs_drb_ci'][1])}) | {_f(r['spearman_rb_drb'])} |",
        f"| ZTF `drb` itself (1 by construction) | {_f(r['drb_auc_vs_drb'])} | 1.000 |",
        "",
        f"## Recall at the model's threshold ({r['threshold']:g})",
        "",
        f"Known solar-system objects: ZTF `ssdistnr` in [0, {SSO_RADIUS_ARCSEC:g}) arcsec. AGN and "
        "variable stars: Fink's SIMBAD cross-match `cdsxmatch` (carried only by the CTAO blazar file; "
        "AGN types, and the V* branch with CVs, novae and variable YSOs, as listed in "
        "`hybrid.evaluation.real_alerts`), and objects of the CTAO blazar catalog of the same package "
        "(`CTAO_blazars_ztf_dr22.parquet`, by ZTF object id) as AGN. All of these are astrophysical, so "
        "a real-bogus model should score them real.",
        "",
        "| alerts | n | recall (score >= threshold) | share with drb >= 0.5 |",
        "|---|---|---|---|",
    ]
    for name, g in r["recall"].items():
        lines.append(f"| {name} | {g['n']} | {_f(g['recall'])} | {_f(g['drb_ge_0.5'])} |")
    types = list(next(iter(r["types_by_file"].values())))
    lines += [
        "",
        "## By file",
        "",
        "| file | n | drb real / bogus | AUC vs drb | share >= threshold |",
        "|---|---|---|---|---|",
    ]
    for name, f in r["by_file"].items():
        lines.append(
            f"| `{name}` | {f['n']} | {f['n_weak_real']} / {f['n_weak_bogus']} | {_f(f['auc_vs_drb'])} "
            f"| {_f(f['share_above_threshold'])} |"
        )
    lines += [
        "",
        "Types assigned (argmax of the type head):",
        "",
        "| file | " + " | ".join(types) + " |",
        "|---|" + "---|" * len(types),
    ]
    for name, counts in r["types_by_file"].items():
        lines.append(f"| `{name}` | " + " | ".join(str(counts[t]) for t in types) + " |")
    lines += ["", f"![score histograms by file]({r['plot']})", ""]
    return "\n".join(lines)
