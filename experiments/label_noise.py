"""The label-noise studies of issue 8: run them and write their reports.

Two studies, one command each (specs beside this file):

* ``grid`` (experiments/label_noise.yaml): noise kind x noise rate x handling method x seed on the
  default benchmark. The spec is also a valid ``hybrid study`` spec (Hydra's cartesian sweep, one run
  at a time); this driver runs the same grid without the repeats (at rate 0 every noise kind is the
  same run), seed by seed (all settings of seed 0 before any of seed 1, so a grid cut short by its
  deadline is still a complete grid of fewer seeds), and ``--jobs`` runs at once.
* ``purity`` (experiments/label_noise_purity.yaml): small pure (truth, N rows) against large impure
  (algorithmic, 10N rows) training sets, with and without handling, as a learning curve in N.

``--grid-spec`` runs another grid of the same form: label_noise_noisy_val.yaml (validation labels as
noisy as the training ones) and label_noise_fused.yaml (the fused model on a slice of the grid). A
spec's ``sweep`` items with one value are set in every run; its name names the study and its report.

``both`` interleaves the two by seed. Every run is ``python run.py OVERRIDES hydra.run.dir=DIR`` (the
library's train task, nothing copied), so its directory holds config.yaml, metrics.json and
.hydra/overrides.yaml like any sweep's run, and runs that finished are skipped when the study is run
again. Datasets are built once, before their runs (the training seed does not change a dataset).
With ``--in-process`` each of the ``--jobs`` workers imports the library once and calls train() run after
run, composing the config from a snapshot of conf/ taken when the study starts. ``report`` writes
reports/label_noise.md and reports/label_noise_purity.md (tables, plots, the best method per noise
kind) from whatever runs exist, and says which runs of the plan are missing.

    python experiments/label_noise.py grid --jobs 2 [--rates 0 0.05 0.2] [OVERRIDES...]
    python experiments/label_noise.py grid --grid-spec experiments/label_noise_fused.yaml --jobs 2
    python experiments/label_noise.py both --jobs 14 --deadline 480 trainer=gpu
    python experiments/label_noise.py report
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hybrid.markdown import markdown_table  # noqa: E402
from hybrid.tracking.compare import Comparison, compare, plot_metric_against  # noqa: E402
from hybrid.tracking.runner import Job, StudyRunner, by_seed  # noqa: E402
from hybrid.tracking.runs import Run, find_runs  # noqa: E402

GRID_SPEC = ROOT / "experiments" / "label_noise.yaml"
PURITY_SPEC = ROOT / "experiments" / "label_noise_purity.yaml"
STUDIES = ROOT / "multirun" / "studies"
METRICS = ["auc", "fnr_at_1pct_fpr", "ece", "missed_detection_rate", "false_positive_rate"]
# what "best" is judged on: the rate at a fixed FPR, calibration, and both error rates at the fixed score
# threshold (0.5), which label noise shifts most; AUC, a ranking metric, is reported but not judged on
RANKED = ["fnr_at_1pct_fpr", "ece", "missed_detection_rate", "false_positive_rate"]
FLAG_METRICS = ["flag_precision", "flag_recall"]
GRID_AXES = ("noise", "noise.rate", "handling")  # the sweep items a grid spec crosses


def sweep_axes(spec: dict) -> dict[str, list[str]]:
    """``["noise=a,b", "noise.splits=[train,val]"]`` -> ``{"noise": ["a", "b"], "noise.splits":
    ["[train,val]"]}``, parsed as Hydra's sweeper parses them (a list value is one value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(spec["sweep"])
    return {
        o.get_key_element(): list(o.sweep_string_iterator())
        if o.is_sweep_override()
        else [o.get_value_string()]
        for o in parsed
    }


def fixed_overrides(spec: dict) -> list[str]:
    """The spec's sweep items with one value, outside the grid's own axes: set in every run."""
    axes = sweep_axes(spec)
    return [f"{key}={values[0]}" for key, values in axes.items() if key not in GRID_AXES and len(values) == 1]


def grid_jobs(
    spec: dict, *, kinds: list[str] | None, rates: list[str] | None, handlings: list[str] | None
) -> list[Job]:
    axes = sweep_axes(spec)
    kinds, rates = kinds or axes["noise"], rates or axes["noise.rate"]
    handlings = handlings or axes["handling"]
    fixed = fixed_overrides(spec)
    jobs = []
    for seed, rate, kind, handling in itertools.product(spec["seeds"], rates, kinds, handlings):
        if float(rate) == 0 and kind != kinds[0]:
            continue  # no flips: the same run for every kind
        overrides = [*fixed, f"noise={kind}", f"noise.rate={rate}", f"handling={handling}"]
        name = f"{kind}-{rate}-{handling}-s{seed}"
        jobs.append(Job(spec["name"], name, seed, overrides, [f"seed={seed}"]))
    return jobs


def purity_jobs(spec: dict, *, sizes: list[int] | None, arms: list[str] | None) -> list[Job]:
    jobs = []
    arms = arms or list(spec["arms"])
    for seed, size, arm in itertools.product(spec["seeds"], sizes or spec["sizes"], arms):
        a = spec["arms"][arm]
        rows = int(a["rows"]) * int(size)
        overrides = [*spec["base"], *a["overrides"], f"train.max_rows={rows}"]
        labels = {"arm": arm, "n_pure": int(size), "max_rows": rows}
        jobs.append(
            Job(
                "label_noise_purity",
                f"{arm}-n{size}-s{seed}",
                seed,
                overrides,
                [*spec["base"], f"seed={seed}"],
                labels,
            )
        )
    return jobs


# --- reports --------------------------------------------------------------------------------------


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def grid_table(runs: list[Run]) -> pd.DataFrame:
    """Mean and std over seeds per (noise, noise.rate, handling); rate-0 runs serve every noise kind."""
    comparison = compare(
        runs,
        keys=["noise", "noise.rate", "handling"],
        metrics=[*METRICS, *FLAG_METRICS],
        sort="fnr_at_1pct_fpr",
    )
    t = comparison.table.copy()
    t["noise.rate"] = t["noise.rate"].astype(float)
    clean = t[t["noise.rate"] == 0]
    kinds = sorted(set(t["noise"]))
    t = pd.concat([t[t["noise.rate"] > 0], *[clean.assign(noise=k) for k in kinds]], ignore_index=True)
    return t.sort_values(["noise", "noise.rate", "handling"]).reset_index(drop=True)


def best_per_kind(t: pd.DataFrame) -> pd.DataFrame:
    """Per noise kind, each handling's metrics averaged over the noisy rates, and its
    ``relative_error``: the mean over the :data:`RANKED` error metrics of its value over that of no
    handling (BCE) on the same kind (1 = as BCE, lower is better; best first). A ratio, unlike a mean
    rank, does not count a difference within seed noise as a whole place."""
    noisy = t[t["noise.rate"] > 0]
    cols = [f"{m}_mean" for m in METRICS]
    mean = noisy.groupby(["noise", "handling"])[cols].mean().reset_index()
    ranked = [f"{m}_mean" for m in RANKED]
    base = mean[mean["handling"] == "none"].set_index("noise")[ranked]
    if missing := sorted(set(mean["noise"]) - set(base.index)):
        raise ValueError(f"no noisy runs with handling=none for {missing}: the report compares with them")
    ratios = mean[ranked].to_numpy() / base.loc[mean["noise"]].to_numpy()
    mean["relative_error"] = ratios.mean(axis=1)
    return mean.sort_values(["noise", "relative_error"])


def _pivot_markdown(t: pd.DataFrame, metric: str) -> list[str]:
    rates = sorted(t["noise.rate"].unique())
    rows = []
    for handling, grp in t.groupby("handling"):
        cells = [handling]
        for r in rates:
            row = grp[grp["noise.rate"] == r]
            cells.append(_fmt(row[f"{metric}_mean"].iat[0], row[f"{metric}_std"].iat[0]) if len(row) else "–")
        rows.append(cells)
    return markdown_table(["handling", *(f"{r:g}" for r in rates)], rows)


def plot_grid(runs: list[Run], out: Path) -> list[Path]:
    """Per noise kind: each metric against the rate, one line per handling (mean ± std over seeds)."""
    paths = []
    clean = [r for r in runs if float(r.config.get("noise.rate", 0)) == 0]
    for kind in sorted({r.config.get("noise") for r in runs}):
        sub = [r for r in runs if r.config.get("noise") == kind and float(r.config.get("noise.rate", 0)) > 0]
        sub += [Run(r.path, {**r.config, "noise": kind}, r.metrics) for r in clean]
        c = compare(sub, keys=["noise.rate", "handling"], metrics=METRICS, sort="fnr_at_1pct_fpr")
        paths.append(plot_metric_against(c, "noise.rate", out.parent / f"{out.name}_{kind}.png"))
    return paths


def plot_summary(best: pd.DataFrame, path: Path) -> Path:
    """Heatmaps, handling x noise kind, of each metric averaged over the noisy rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybrid.evaluation.evaluate import save_figure

    kinds, handlings = sorted(best["noise"].unique()), sorted(best["handling"].unique())
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 0.45 * len(handlings) + 1.6))
    for ax, metric in zip(np.atleast_1d(axes), METRICS, strict=True):
        grid = best.pivot(index="handling", columns="noise", values=f"{metric}_mean").reindex(
            index=handlings, columns=kinds
        )
        cmap = "YlGn" if metric == "auc" else "YlGn_r"  # greener is better in every panel
        ax.imshow(grid.to_numpy(float), cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(handlings)), handlings, fontsize=8)
        for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="k")
        ax.set_title(f"{metric} (mean over noisy rates)", fontsize=9)
    return save_figure(fig, path)


def plan_status(study_dir: Path) -> tuple[int, int, list[str]]:
    """(runs planned, runs finished, names of planned runs without metrics) from the study's plan."""
    plan = study_dir / "plan.json"
    if not plan.exists():
        return 0, 0, []
    names = json.loads(plan.read_text())["runs"]
    missing = [n for n in names if not (study_dir / n / "metrics.json").exists()]
    return len(names), len(names) - len(missing), missing


def grid_report(study_dir: Path, out: Path, spec: dict) -> Path:
    runs, _ = find_runs([study_dir])
    t = grid_table(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    t.to_csv(out.with_suffix(".csv"), index=False)
    best = best_per_kind(t)
    plots = plot_grid(runs, out)
    summary = plot_summary(best, out.parent / f"{out.name}_summary.png")
    planned, finished, missing = plan_status(study_dir)
    run_info = json.loads((study_dir / "plan.json").read_text()) if (study_dir / "plan.json").exists() else {}
    lines = [
        f"# Label noise: injection and handling on the default benchmark (`{spec['name']}`)",
        "",
        spec["description"].strip(),
        "",
        "## What ran",
        "",
        f"{len(runs)} finished runs in {study_dir.relative_to(ROOT)} "
        f"({finished} of the {planned} planned by the last invocation). "
        f"Seeds: {sorted({int(r.config.get('seed', 0)) for r in runs})}; rates: "
        f"{sorted({float(r.config.get('noise.rate', 0)) for r in runs})}; handling: "
        f"{sorted({str(r.config.get('handling')) for r in runs})}.",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in run_info.get("commands", [])),
        "",
        *_machine_line(run_info),
        "Set in every run: `" + " ".join([*fixed_overrides(spec), *run_info.get("extra", [])]) + "`.",
        "",
    ]
    if missing:
        lines += [f"Planned but not finished (deadline or failure): {len(missing)} runs.", ""]
    lines += [
        "Each cell is the mean ± standard deviation over seeds (the training seed: initialisation, batch "
        "order and which labels flip; the dataset stays the same). Rate 0 (no flips) is one set of runs "
        "shared by every noise kind. Metrics on the clean test split: FNR at 1% FPR and ECE are "
        "fixed-threshold and calibration metrics, which label noise moves more than the ranking (AUC).",
        "",
        "## Best method per noise kind",
        "",
        "Metrics averaged over the noisy rates (> 0) that ran. The best handling has the lowest error "
        "relative to no handling (BCE), averaged over four error metrics that label noise moves: FNR at 1% "
        "FPR, ECE, and the missed-detection and false-positive rates at the fixed score threshold 0.5 "
        "(MDR, FPR); 1 is as good as BCE. AUC is shown, not judged on.",
        "",
        "| noise kind | best handling | relative error | runner-up | FNR at 1% FPR | ECE | MDR | FPR | AUC "
        "| best by FNR | best by ECE | none: FNR, ECE, MDR, FPR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, grp in best.groupby("noise"):
        top, second = grp.iloc[0], grp.iloc[min(1, len(grp) - 1)]
        base = grp[grp["handling"] == "none"]
        base_cells = "–"
        if len(base):
            b = base.iloc[0]
            base_cells = ", ".join(f"{b[f'{m}_mean']:.3f}" for m in RANKED)
        by_fnr = grp.sort_values("fnr_at_1pct_fpr_mean").iloc[0]
        by_ece = grp.sort_values("ece_mean").iloc[0]
        lines.append(
            f"| {kind} | **{top['handling']}** | {top['relative_error']:.2f} | {second['handling']} "
            f"({second['relative_error']:.2f}) | {top['fnr_at_1pct_fpr_mean']:.3f} | "
            f"{top['ece_mean']:.3f} | {top['missed_detection_rate_mean']:.3f} | "
            f"{top['false_positive_rate_mean']:.3f} | {top['auc_mean']:.4f} | {by_fnr['handling']} "
            f"({by_fnr['fnr_at_1pct_fpr_mean']:.3f}) | {by_ece['handling']} ({by_ece['ece_mean']:.3f}) | "
            f"{base_cells} |"
        )
    lines += ["", f"![summary]({summary.name})", ""]
    for kind in sorted(t["noise"].unique()):
        sub = t[t["noise"] == kind]
        lines += [f"## Noise kind: {kind}", ""]
        for metric, title in (
            ("fnr_at_1pct_fpr", "FNR at 1% FPR"),
            ("ece", "ECE"),
            ("missed_detection_rate", "Missed-detection rate at score 0.5"),
            ("false_positive_rate", "False-positive rate at score 0.5"),
            ("auc", "AUC"),
        ):
            lines += [f"{title} against the noise rate:", "", *_pivot_markdown(sub, metric), ""]
        cleaners = sub[sub["flag_precision_mean"].notna() & (sub["noise.rate"] > 0)]
        if len(cleaners):
            lines += [
                "Flagged labels of the cleaners against the injected flips (precision / recall):",
                "",
                "| handling | rate | precision | recall |",
                "|---|---|---|---|",
            ]
            for _, row in cleaners.iterrows():
                lines.append(
                    f"| {row['handling']} | {row['noise.rate']:g} | "
                    f"{_fmt(row['flag_precision_mean'], row['flag_precision_std'])} | "
                    f"{_fmt(row['flag_recall_mean'], row['flag_recall_std'])} |"
                )
            lines.append("")
        plot = out.parent / f"{out.name}_{kind}.png"
        if plot in plots:
            lines += [f"![{kind}]({plot.name})", ""]
    lines += [f"The whole table: [{out.name}.csv]({out.name}.csv).", ""]
    md = out.with_suffix(".md")
    md.write_text("\n".join(lines))
    return md


def _machine_line(plan: dict) -> list[str]:
    """Where the runs ran, as their plan recorded it."""
    m = plan.get("machine")
    if not m:
        return []
    return [
        f"Ran on: {m['cpus']} CPUs, GPU: {m.get('gpu') or 'none'}, {m['platform']}, Python {m['python']}.",
        "",
    ]


def _label_quality(runs: list[Run]) -> list[str]:
    """A sentence on how wrong each label source of the runs' dataset is, from its training rows."""
    path = ROOT / str(runs[0].metrics.get("dataset", "")) / "candidates.parquet" if runs else None
    if path is None or not path.exists():
        return []
    table = pd.read_parquet(path, columns=["split", "label_source", "label_real", "truth_real"])
    train = table[table["split"] == "train"]
    wrong = (train["label_real"] != train["truth_real"]).groupby(train["label_source"]).agg(["mean", "size"])
    parts = [f"{source}: {row['mean']:.1%} of {row['size']:.0f}" for source, row in wrong.iterrows()]
    return [f"Wrong labels among the dataset's training rows, by label source: {'; '.join(parts)}.", ""]


def purity_report(study_dir: Path, out: Path) -> Path:
    runs, _ = find_runs([study_dir])
    plan = json.loads((study_dir / "plan.json").read_text())
    labels = plan["labels"]
    runs = [
        Run(r.path, {**r.config, **labels[Path(r.path).name]}, r.metrics, r.predictions)
        for r in runs
        if Path(r.path).name in labels
    ]
    c: Comparison = compare(
        runs, keys=["arm", "n_pure"], metrics=[*METRICS, "n_train"], sort="fnr_at_1pct_fpr"
    )
    c.table.to_csv(out.with_suffix(".csv"), index=False)
    plot = plot_metric_against(
        Comparison(c.table, c.keys, METRICS, c.sort, c.runs), "n_pure", out.parent / f"{out.name}_curve.png"
    )
    planned, finished, missing = plan_status(study_dir)
    spec = yaml.safe_load(PURITY_SPEC.read_text())
    t = c.table.assign(n_pure=pd.to_numeric(c.table["n_pure"])).sort_values(
        ["n_pure", "fnr_at_1pct_fpr_mean"]
    )
    lines = [
        "# Label noise: small pure against large impure training sets",
        "",
        spec["description"].strip(),
        "",
        f"Dataset: `{' '.join(spec['base'])}` (ZTF-like survey, GOTO-like curation: 10% of the fields vetted "
        "by the truth, the rest labelled algorithmically -- known asteroids real, random detections bogus -- "
        "plus injected transients). Each arm trains on a random subset of its label sources' training rows "
        "(`train.max_rows`): N pure rows, or 10 N impure rows (capped by what the dataset holds: `n_train` "
        "gives the rows actually used). Validation (early stopping) uses the dataset's validation split as "
        "labelled; every run is scored on the same test split against the truth.",
        "",
        *_label_quality(runs),
        f"{len(runs)} finished runs ({finished} of the {planned} planned by the last invocation); "
        f"extra overrides of every run: `{' '.join(plan.get('extra', [])) or 'none'}`. Commands: "
        + "; ".join(f"`{c}`" for c in plan.get("commands", [])),
        "",
        *_machine_line(plan),
        "| N (pure rows) | arm | rows trained on | FNR at 1% FPR | AUC | ECE | MDR at 0.5 | FPR at 0.5 "
        "| seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in t.iterrows():
        lines.append(
            f"| {row['n_pure']} | {row['arm']} | {row['n_train_mean']:.0f} | "
            f"{_fmt(row['fnr_at_1pct_fpr_mean'], row['fnr_at_1pct_fpr_std'])} | "
            f"{_fmt(row['auc_mean'], row['auc_std'], 4)} | "
            f"{_fmt(row['ece_mean'], row['ece_std'], 4)} | "
            f"{_fmt(row['missed_detection_rate_mean'], row['missed_detection_rate_std'])} | "
            f"{_fmt(row['false_positive_rate_mean'], row['false_positive_rate_std'])} | {row['n']} |"
        )
    if missing:
        lines += ["", f"Planned but not finished (deadline or failure): {len(missing)} runs."]
    lines += ["", f"![learning curve]({plot.name})", "", f"The table: [{out.name}.csv]({out.name}.csv).", ""]
    md = out.with_suffix(".md")
    md.write_text("\n".join(lines))
    return md


# --- command line ---------------------------------------------------------------------------------


def write_plan(study_dir: Path, jobs: list[Job], extra: list[str]) -> None:
    """Record the invocation in ``study_dir/plan.json``; the planned runs accumulate over invocations
    with the same extra overrides (a study continued later, or in phases)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / "plan.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if old.get("extra") != extra:
        old = {}
    command = shlex.join(["python", "experiments/label_noise.py", *sys.argv[1:]])
    import torch

    from hybrid.bench.context import machine_info

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    plan = {
        "commands": [*old.get("commands", []), command],
        "machine": {**machine_info(), "gpu": gpu},
        "extra": extra,
        "runs": list(dict.fromkeys([*old.get("runs", []), *(j.name for j in jobs)])),
        "labels": {**old.get("labels", {}), **{j.name: j.labels for j in jobs}},
    }
    path.write_text(json.dumps(plan, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["grid", "purity", "both", "report"])
    p.add_argument(
        "--grid-spec",
        type=Path,
        default=GRID_SPEC,
        help="the grid's spec (its name names the study and report)",
    )
    p.add_argument("--kinds", nargs="+", help="noise kinds of the grid (default: the spec's)")
    p.add_argument("--rates", nargs="+", help="noise rates of the grid (default: the spec's)")
    p.add_argument("--handlings", nargs="+", help="handling methods of the grid (default: the spec's)")
    p.add_argument("--sizes", nargs="+", type=int, help="pure-set sizes N of the purity study")
    p.add_argument("--arms", nargs="+", help="arms of the purity study (default: the spec's)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the specs')")
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--build-workers", type=int, default=2, help="processes of each dataset build")
    p.add_argument("--deadline", type=float, help="seconds after which no run starts or continues")
    p.add_argument(
        "--in-process", action="store_true", help="train in --jobs worker processes (no interpreter per run)"
    )
    p.add_argument("--reports", type=Path, default=ROOT / "reports")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of every run (e.g. the study-size model)")
    args = p.parse_intermixed_args(argv)
    grid_spec, purity_spec = (
        yaml.safe_load(args.grid_spec.read_text()),
        yaml.safe_load(PURITY_SPEC.read_text()),
    )
    if args.seeds:
        grid_spec["seeds"] = purity_spec["seeds"] = args.seeds
    queues = []
    if args.what in ("grid", "both"):
        jobs = grid_jobs(grid_spec, kinds=args.kinds, rates=args.rates, handlings=args.handlings)
        write_plan(STUDIES / grid_spec["name"], jobs, args.overrides)
        queues.append(jobs)
    if args.what in ("purity", "both"):
        jobs = purity_jobs(purity_spec, sizes=args.sizes, arms=args.arms)
        write_plan(STUDIES / "label_noise_purity", jobs, args.overrides)
        queues.append(jobs)
    if queues:
        runner = StudyRunner(
            STUDIES,
            jobs=args.jobs,
            deadline=args.deadline,
            extra=args.overrides,
            build_workers=args.build_workers,
            in_process=args.in_process,
            conf_name="label_noise_conf",
        )
        records = runner.run(by_seed(*queues))
        (STUDIES / f"runs-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
            json.dumps({"runs": records, "builds": runner.log}, indent=1)
        )
        done = sum(r["status"] == "done" for r in records)
        print(f"{done} runs done, {len(records) - done} not", flush=True)
    reports = {
        grid_spec["name"]: lambda d, out: grid_report(d, out, grid_spec),
        purity_spec["name"]: purity_report,
    }
    for name, report in reports.items():
        study_dir = STUDIES / name
        if study_dir.exists() and any(study_dir.rglob("metrics.json")):
            print("report:", report(study_dir, args.reports / name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
