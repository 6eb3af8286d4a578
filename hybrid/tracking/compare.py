"""`hybrid compare`: a table of runs, grouped over seeds, sorted by a metric, with plots.

The table has one row per distinct setting of the chosen config keys (by default: every key whose
value differs between the runs, seeds aside), and per metric the mean and standard deviation over
the seeds in that group. Plots: each metric against a swept parameter (``x``), and the test-split
ROC curves of each group overlaid (false-negative rate against false-positive rate, log axes, as the
real-bogus literature plots them).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from hybrid.evaluation.evaluate import save_figure
from hybrid.markdown import markdown_table
from hybrid.tracking.runs import Run

__all__ = ["DEFAULT_METRICS", "Comparison", "compare", "lower_is_better", "varying_keys"]

DEFAULT_METRICS = ("auc", "fnr_at_1pct_fpr", "fpr_at_1pct_fnr", "ece", "type_macro_f1")
SEED_KEY = "seed"
# keys that differ between runs without describing the experiment
_BOOKKEEPING = (
    "run_dir",
    "paths.",
    "logger.",
    "hydra",
    "dataset",
    "data.progress",
    "trainer.enable_progress",
)
# counts and sizes: shown, never ranked
_NOT_RANKED = ("n_", "parameters", "epochs")
_LOWER_IS_BETTER = (
    "fnr",
    "fpr",
    "false_",
    "ece",
    "nll",
    "brier",
    "loss",
    "missed",
    "error",
    "delay",
    "false_alarm",
)


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (rates of errors, calibration, losses)."""
    return any(word in metric for word in _LOWER_IS_BETTER)


def varying_keys(runs: list[Run]) -> list[str]:
    """Config keys (and group choices) whose value differs between runs, seeds and bookkeeping aside."""
    keys = sorted(set().union(*(r.config for r in runs)))
    out = []
    for key in keys:
        if key == SEED_KEY or key.startswith(_BOOKKEEPING) or key.endswith("_target_"):
            continue
        if len({repr(r.config.get(key)) for r in runs}) > 1:
            out.append(key)
    # a group choice (``fusion``) explains its resolved keys (``fusion._target_``, ``fusion.dim``)
    return [k for k in out if not any(k.startswith(f"{p}.") for p in out)]


@dataclass
class Comparison:
    """The grouped table (``table``: keys, ``n`` seeds, ``<metric>_mean`` / ``<metric>_std``) and the
    runs it was made from."""

    table: pd.DataFrame
    keys: list[str]
    metrics: list[str]
    sort: str | None
    runs: list[Run]

    def groups(self) -> dict[str, list[Run]]:
        """Runs per row of the table, by the row's label."""
        out: dict[str, list[Run]] = {}
        for run in self.runs:
            out.setdefault(_label(run, self.keys), []).append(run)
        return out

    def markdown(self, digits: int = 4) -> str:
        """The table as Markdown: ``mean ± std`` over seeds; the best value of each metric in bold
        (counts such as ``n_test`` or ``parameters`` are shown, not ranked)."""
        head = [*self.keys, "seeds", *self.metrics]
        best = {}
        for m in self.metrics:
            col = self.table[f"{m}_mean"]
            if col.notna().any() and not m.startswith(_NOT_RANKED):
                best[m] = col.min() if lower_is_better(m) else col.max()
        rows = []
        for _, row in self.table.iterrows():
            cells = [_fmt(row[k]) for k in self.keys] + [str(int(row["n"]))]
            for m in self.metrics:
                mean, std = row[f"{m}_mean"], row[f"{m}_std"]
                if pd.isna(mean):
                    cells.append("—")
                    continue
                places = 0 if m.startswith(_NOT_RANKED) and float(mean).is_integer() else digits
                text = f"{mean:.{places}f}" + (f" ± {std:.{places}f}" if row["n"] > 1 else "")
                cells.append(f"**{text}**" if m in best and mean == best[m] and len(self.table) > 1 else text)
            rows.append(cells)
        return "\n".join(markdown_table(head, rows))


def _fmt(value: object) -> str:
    return "null" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _label(run: Run, keys: list[str]) -> str:
    return ", ".join(f"{k}={_fmt(run.config.get(k))}" for k in keys) or "all runs"


def compare(
    runs: list[Run],
    *,
    keys: list[str] | None = None,
    metrics: list[str] | None = None,
    sort: str | None = None,
) -> Comparison:
    """Group ``runs`` by ``keys`` (default: the keys that vary) and summarise ``metrics`` over seeds.

    Rows are sorted by ``sort`` (default: the first metric), best first, or by a key's values.
    """
    if not runs:
        raise ValueError("no finished runs to compare (no metrics.json found)")
    keys = varying_keys(runs) if keys is None else list(keys)
    metrics = list(metrics or [m for m in DEFAULT_METRICS if any(m in r.metrics for r in runs)])
    rows = []
    for run in runs:
        row = {k: _fmt(run.config.get(k)) for k in keys}
        row.update({m: _number(run.metrics.get(m)) for m in metrics})
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*keys, *metrics])
    grouped = df.groupby(keys, sort=False, dropna=False) if keys else df.assign(_all=0).groupby("_all")
    table = grouped[metrics].agg(["mean", "std", "count"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    table["n"] = grouped.size()
    table = table.drop(columns=[c for c in table.columns if c.endswith("_count")]).reset_index()
    table = table.drop(columns=["_all"], errors="ignore")
    sort = sort or (metrics[0] if metrics else None)
    if sort in keys:
        table = table.sort_values(sort)
    elif sort is not None:
        if f"{sort}_mean" not in table:
            raise KeyError(f"sort metric {sort!r} is not among the metrics {metrics} or the keys {keys}")
        table = table.sort_values(f"{sort}_mean", ascending=lower_is_better(sort), na_position="last")
    return Comparison(table.reset_index(drop=True), keys, metrics, sort, runs)


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def plot_metric_against(comparison: Comparison, x: str, path: Path) -> Path:
    """Each metric (mean ± std over seeds) against the swept key ``x``; one line per other setting."""
    t = comparison.table
    others = [k for k in comparison.keys if k != x]
    fig, axes = plt.subplots(
        1, len(comparison.metrics), figsize=(3.6 * len(comparison.metrics), 3.2), squeeze=False
    )
    numeric = pd.to_numeric(t[x], errors="coerce")
    order = numeric.argsort() if numeric.notna().all() else np.argsort(t[x].astype(str).to_numpy())
    t = t.iloc[np.asarray(order)]
    xs = pd.to_numeric(t[x], errors="coerce") if numeric.notna().all() else t[x].astype(str)
    for ax, m in zip(axes[0], comparison.metrics, strict=True):
        for label, sel in t.groupby(others, sort=False).groups.items() if others else [("", t.index)]:
            ax.errorbar(
                xs.loc[sel],
                t.loc[sel, f"{m}_mean"],
                yerr=t.loc[sel, f"{m}_std"].fillna(0),
                fmt="o-",
                ms=3,
                capsize=2,
                label=", ".join(map(str, np.atleast_1d(label))) if others else None,
            )
        ax.set(xlabel=x, ylabel=m)
        ax.tick_params(axis="x", labelrotation=30)
    if others:
        axes[0][0].legend(fontsize=6)
    return save_figure(fig, path)


def plot_roc_overlay(comparison: Comparison, path: Path) -> Path | None:
    """Test-split ROC curves (FNR against FPR) of every group, predictions pooled over its seeds."""
    curves = []
    for label, runs in comparison.groups().items():
        tables = [
            pd.read_parquet(r.predictions, columns=["truth_real", "score"]) for r in runs if r.predictions
        ]
        if tables:
            pooled = pd.concat(tables)
            fpr, tpr, _ = roc_curve(pooled["truth_real"].astype(bool), pooled["score"])
            curves.append((label, fpr, 1 - tpr))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, fpr, fnr in curves:
        ax.plot(fpr, fnr, lw=1.2, label=label)
    ax.axvline(0.01, color="grey", lw=0.8, ls="--")
    ax.axhline(0.01, color="grey", lw=0.8, ls="--")
    ax.set(
        xscale="log", yscale="log", xlim=(1e-4, 1), xlabel="false-positive rate", ylabel="false-negative rate"
    )
    ax.legend(fontsize=6)
    return save_figure(fig, path)


def write_report(
    comparison: Comparison,
    out: Path,
    *,
    x: str | None = None,
    title: str | None = None,
    description: str = "",
    plots_of: Path | None = None,
) -> Path:
    """``<out>.md`` (table and plots), ``<out>.csv`` (the table), ``<out>_<x>.png``, ``<out>_roc.png``;
    with ``plots_of`` (a run directory), that run's own plots copied to ``<out>/`` and shown too."""
    out.parent.mkdir(parents=True, exist_ok=True)
    comparison.table.to_csv(out.with_suffix(".csv"), index=False)
    plots = []
    if x is not None:
        if x not in comparison.keys:
            raise KeyError(f"x={x!r} is not one of the table's keys {comparison.keys}")
        plots.append(plot_metric_against(comparison, x, out.parent / f"{out.name}_{x.replace('.', '_')}.png"))
    roc = plot_roc_overlay(comparison, out.parent / f"{out.name}_roc.png")
    plots += [roc] if roc else []
    if plots_of is not None:
        (out.parent / out.name).mkdir(exist_ok=True)
        for png in sorted((Path(plots_of) / "plots").glob("*.png")):
            plots.append(Path(shutil.copy(png, out.parent / out.name / png.name)))
    lines = [f"# {title or out.name}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        f"{len(comparison.runs)} runs in {len(comparison.table)} groups; each cell is the mean ± standard "
        "deviation over the training seeds of its group (`seeds` = runs; the seeds vary initialisation, "
        "batches and augmentation, while the dataset stays the same unless `data.seed` is swept). "
        f"Sorted by `{comparison.sort}`; best values in bold. Metrics on each run's test split (split "
        "by object); lower is better for FNR, FPR and ECE.",
        "",
        comparison.markdown(),
        "",
        *[f"![{p.stem}]({p.relative_to(out.parent)})" for p in plots],
        "",
    ]
    if plots_of is not None:
        lines += [f"Plots of one run: {_relative(Path(plots_of))}.", ""]
    lines.append("Runs: " + ", ".join(sorted({_relative(Path(r.path).parent) for r in comparison.runs})))
    md = out.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    return md
