"""Evaluation of scored candidates: metrics.json and the plots people look at.

The input is the test split's candidate table with the model's scores (``score`` for real-bogus and
``p_<type>`` per type). Real-bogus is scored against the true label (``truth_real``), so label noise
in training never leaks into the evaluation; completeness uses the truth magnitude and host offset.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from hybrid.evaluation.metrics import completeness, real_bogus_metrics, type_metrics
from hybrid.taxonomy import TRANSIENT_TYPES

MAG_EDGES = np.arange(13.0, 23.01, 0.5)
OFFSET_EDGES = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0])


def evaluate(scored: pd.DataFrame, out_dir: str | Path | None = None, *, threshold: float = 0.5) -> dict:
    """Metrics of a scored test table; with ``out_dir``, also writes plots/ and the completeness
    tables (the caller writes metrics.json, once its own keys are added)."""
    y = scored["truth_real"].to_numpy(bool)
    score = scored["score"].to_numpy(float)
    metrics = real_bogus_metrics(y, score, threshold)
    names = list(TRANSIENT_TYPES)
    prob = scored[[f"p_{t}" for t in names]].to_numpy(float)
    true_type = scored["truth_type"].map(names.index).to_numpy()
    tm, confusion = type_metrics(true_type, prob, names)
    metrics.update(tm)
    metrics["n_test"] = len(scored)
    metrics["n_test_real"] = int(y.sum())
    detected = score >= threshold
    mag_curve = completeness(scored.loc[y, "truth_mag"].to_numpy(), detected[y], MAG_EDGES)
    offsets = scored.get("truth_host_offset_re", pd.Series(np.nan, index=scored.index))
    off_sel = y & np.isfinite(offsets.to_numpy(float))
    off_curve = completeness(offsets.to_numpy(float)[off_sel], detected[off_sel], OFFSET_EDGES)
    if out_dir is not None:
        out = Path(out_dir)
        (out / "plots").mkdir(parents=True, exist_ok=True)
        mag_curve.to_csv(out / "completeness_mag.csv", index=False)
        off_curve.to_csv(out / "completeness_offset.csv", index=False)
        plot_all(scored, metrics, confusion, mag_curve, off_curve, out / "plots", threshold)
    return metrics


def plot_all(
    scored: pd.DataFrame,
    metrics: dict,
    confusion: np.ndarray,
    mag_curve: pd.DataFrame,
    off_curve: pd.DataFrame,
    out: Path,
    threshold: float,
) -> list[Path]:
    y = scored["truth_real"].to_numpy(bool)
    score = scored["score"].to_numpy(float)
    paths = []

    fig, ax = plt.subplots(figsize=(4.5, 4))
    fpr, tpr, _ = roc_curve(y, score)
    ax.plot(fpr, 1 - tpr, label=f"AUC {metrics['auc']:.4f}")
    ax.axvline(0.01, color="grey", lw=0.8, ls="--")
    ax.set(
        xscale="log", yscale="log", xlabel="false-positive rate", ylabel="false-negative rate", xlim=(1e-4, 1)
    )
    ax.set_title(f"FNR at 1% FPR = {metrics['fnr_at_1pct_fpr']:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "roc.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = np.linspace(0, 1, 41)
    for name, grp in scored[y].groupby("truth_type"):
        axes[0].hist(grp["score"], bins, histtype="step", label=f"{name} ({len(grp)})", density=True)
    axes[0].hist(score[~y], bins, histtype="step", color="k", label=f"bogus ({(~y).sum()})", density=True)
    for name, grp in scored[~y].groupby("bogus_kind"):
        axes[1].hist(grp["score"], bins, histtype="step", label=f"{name} ({len(grp)})", density=True)
    for ax, title in zip(axes, ("real, by true type", "bogus, by kind"), strict=True):
        ax.set_yscale("log", nonpositive="clip")
        ax.set(xlabel="real-bogus score", title=title)
        ax.axvline(threshold, color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "score_histograms.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, curve, label in (
        (axes[0], mag_curve, "true magnitude of the transient (mag)"),
        (axes[1], off_curve, "host offset / R_e"),
    ):
        mid = (curve["lo"] + curve["hi"]) / 2
        ax.errorbar(mid, curve["completeness"], yerr=curve["error"], fmt="o-", ms=3)
        ax.set(xlabel=label, ylabel=f"completeness (score >= {threshold})", ylim=(0, 1.05))
    paths.append(save_figure(fig, out / "completeness.png"))

    fig, ax = plt.subplots(figsize=(4.5, 4))
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(score, edges) - 1, 0, 9)
    frac = [y[idx == b].mean() if (idx == b).any() else np.nan for b in range(10)]
    conf = [score[idx == b].mean() if (idx == b).any() else np.nan for b in range(10)]
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.plot(conf, frac, "o-")
    ax.set(
        xlabel="predicted probability of real", ylabel="fraction real", title=f"ECE = {metrics['ece']:.4f}"
    )
    paths.append(save_figure(fig, out / "reliability.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    norm = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    names = list(TRANSIENT_TYPES)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if confusion[i, j]:
                ax.text(
                    j,
                    i,
                    str(confusion[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set(xlabel="predicted type", ylabel="true type", title=f"macro-F1 = {metrics['type_macro_f1']:.3f}")
    paths.append(save_figure(fig, out / "confusion.png"))
    return paths


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close ``fig``; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
