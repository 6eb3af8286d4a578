"""Uncertainty study: MC dropout, deep ensembles and temperature scaling, on clean and shifted data.

    python experiments/uncertainty_study.py [--members 5] [--mc-samples 20] [--max-shifted 2000] [OVR...]

Trains a deep ensemble of the default fused model on the base dataset (experiments/shift_data.py),
then scores the base test split and the shifted datasets with three predictors: one member alone,
MC dropout of that member, and the ensemble; each with and without temperature scaling fitted on the
validation split. Writes reports/uncertainty.md, reports/uncertainty/results.csv and plots. The
members' checkpoints stay in outputs/studies/uncertainty/ (a repeated call reuses them).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from shift_data import BASE, DESCRIPTIONS, MODEL, STREAMS, base_data, dataset, study_parser

from hybrid.evaluation.evaluate import save_figure
from hybrid.monitoring.describe import load_split
from hybrid.uncertainty import (
    Ensemble,
    MCDropout,
    fit_temperature,
    sample_split,
    train_ensemble,
    uncertainty_metrics,
)

SHIFTED = ("clean-2", "seeing", "naive", "atlas")
KEYS = (
    "auc",
    "nll",
    "brier",
    "ece",
    "error_rate",
    "auroc_err_entropy",
    "auroc_err_mutual_info",
    "mean_mutual_info",
)


def main() -> Path:
    parser = study_parser(__doc__)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--max-shifted", type=int, default=2000, help="candidates scored per shifted set")
    parser.add_argument("--work", type=Path, default=Path("outputs/studies/uncertainty"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    cfg, dm = base_data(args.overrides)
    members = train_ensemble(cfg, dm, args.members, args.work, enable_model_summary=False)
    t_train = time.time() - t0
    names, channels = dm.feature_names, dm.channel_names
    sets = {"base test": dm.splits["test"]}
    rng = np.random.default_rng(0)
    for key in SHIFTED:
        split = load_split(dataset(STREAMS[key]), names, channels, model=members[0])
        if len(split) > args.max_shifted:
            split = split.subset(np.sort(rng.permutation(len(split))[: args.max_shifted]))
        sets[DESCRIPTIONS[key]] = split
    predictors = {
        "single model": Ensemble(members[:1]),
        f"MC dropout (S={args.mc_samples})": MCDropout(members[0], args.mc_samples, seed=0),
        f"deep ensemble (M={args.members})": Ensemble(members),
    }
    y_val = dm.splits["val"].table["label_real"].to_numpy(float)
    rows, reliability, mi = [], {}, {}
    for pname, predictor in predictors.items():
        t = fit_temperature(sample_split(predictor, dm.splits["val"]), y_val)
        for sname, split in sets.items():
            samples = sample_split(predictor, split)
            y = split.table["truth_real"].to_numpy(bool)
            for scaled, temp in ((False, 1.0), (True, t)):
                pred = samples.real_bogus(temp)
                m = uncertainty_metrics(y, pred)
                rows.append(
                    {"predictor": pname, "temperature": temp, "scaled": scaled, "test set": sname, **m}
                )
                if sname == "base test":
                    reliability[(pname, scaled)] = (y, pred.positive())
            mi[(pname, sname)] = samples.real_bogus(t).mutual_info
    table = pd.DataFrame(rows)
    (args.out / "uncertainty").mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "uncertainty" / "results.csv", index=False)
    figs = _plots(table, reliability, mi, args.out / "uncertainty")
    meta = {
        "members": args.members,
        "mc_samples": args.mc_samples,
        "max_shifted": args.max_shifted,
        "overrides": [*BASE, *MODEL, *args.overrides],
        "epochs_note": "trainer.max_epochs=8 with early stopping on val/loss (patience 4)",
        "n_train": len(dm.splits["train"]),
        "n_val": len(dm.splits["val"]),
        "test_sets": {k: len(v) for k, v in sets.items()},
        "datasets": {"base (val, test)": str(dm.root), **{k: str(dataset(STREAMS[k])) for k in SHIFTED}},
        "members_trained_on": sorted(
            {
                json.loads((args.work / f"member-{i}" / "metrics.json").read_text())["dataset"]
                for i in range(args.members)
            }
        ),
        "train_seconds": round(t_train, 1),
        "total_seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, shared CPU",
    }
    return _write(table, meta, figs, args.out)


def _value(table: pd.DataFrame, predictor: str, scaled: bool, test_set: str, metric: str) -> float:
    sel = (table["predictor"] == predictor) & (table["scaled"] == scaled) & (table["test set"] == test_set)
    return float(table.loc[sel, metric].iloc[0])


def _reliability(ax: plt.Axes, y: np.ndarray, p: np.ndarray, label: str) -> None:
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(p, edges) - 1, 0, 9)
    conf = [p[idx == b].mean() if (idx == b).any() else np.nan for b in range(10)]
    frac = [y[idx == b].mean() if (idx == b).any() else np.nan for b in range(10)]
    ax.plot(conf, frac, "o-", ms=3, label=label)


def _plots(table: pd.DataFrame, reliability: dict, mi: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    predictors = list(dict.fromkeys(table["predictor"]))
    sets = list(dict.fromkeys(table["test set"]))
    paths = []

    fig, axes = plt.subplots(1, len(predictors), figsize=(4 * len(predictors), 3.8), sharey=True)
    for ax, pname in zip(axes, predictors, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        for scaled in (False, True):
            y, p = reliability[(pname, scaled)]
            ece = _value(table, pname, scaled, "base test", "ece")
            _reliability(ax, y, p, f"{'temperature-scaled' if scaled else 'raw'} (ECE {ece:.3f})")
        ax.set(title=pname, xlabel="predicted probability of real")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("fraction real (base test)")
    paths.append(save_figure(fig, out / "reliability.png"))

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    x = np.arange(len(sets))
    width = 0.8 / len(predictors)
    for ax, metric, title in (
        (axes[0], "nll", "NLL (temperature-scaled)"),
        (axes[1], "ece", "ECE (temperature-scaled)"),
        (axes[2], "auroc_err_mutual_info", "error-detection AUROC of mutual information"),
    ):
        for i, pname in enumerate(predictors):
            vals = [_value(table, pname, True, s, metric) for s in sets]
            ax.bar(x + i * width, vals, width, label=pname)
        ax.set_xticks(
            x + width * (len(predictors) - 1) / 2,
            [s.split(",")[-1].strip() for s in sets],
            rotation=30,
            ha="right",
            fontsize=7,
        )
        ax.set_title(title, fontsize=9)
    axes[2].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    paths.append(save_figure(fig, out / "shift_metrics.png"))

    fig, axes = plt.subplots(1, len(predictors) - 1, figsize=(4.5 * (len(predictors) - 1), 3.6))
    for ax, pname in zip(np.atleast_1d(axes), predictors[1:], strict=True):
        bins = np.linspace(
            0, max(float(np.quantile(np.concatenate([mi[(pname, s)] for s in sets]), 0.995)), 1e-6), 40
        )
        for s in sets:
            ax.hist(mi[(pname, s)], bins, histtype="step", density=True, label=s.split(",")[-1].strip())
        ax.set(yscale="log", xlabel="mutual information (nats)", title=pname)
        ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "mutual_information.png"))
    return paths


def _write(table: pd.DataFrame, meta: dict, figs: list[Path], out: Path) -> Path:
    (out / "uncertainty").mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "uncertainty" / "results.csv", index=False)
    (out / "uncertainty" / "run.json").write_text(json.dumps(meta, indent=2))
    lines = [
        "# Uncertainty: MC dropout, deep ensembles and temperature scaling under dataset shift",
        "",
        "Written by `python experiments/uncertainty_study.py` "
        f"(members {meta['members']}, MC samples {meta['mc_samples']}). Base dataset: "
        f"{meta['n_train']} training and {meta['n_val']} validation candidates of 80 small ZTF-like fields "
        "(experiments/shift_data.py); the fused model, trainer.max_epochs=8 with early stopping. "
        "Temperatures are fitted on the validation split. Shifted sets are new fields scored by the same "
        "models (at most " + str(meta["max_shifted"]) + " candidates each, drawn at random). No test-time "
        f"rotation averaging. One training seed per member. Ran in {meta['total_seconds']:.0f} s "
        f"({meta['train_seconds']:.0f} s training) on {meta['machine']}.",
        "",
        "Datasets (content-hashed cache names; a different hash from the members' training data means the "
        "pipeline config changed in between, which is itself a small shift): members trained on "
        + ", ".join(f"`{Path(d).name}`" for d in meta["members_trained_on"])
        + "; evaluated on "
        + ", ".join(f"{k} `{Path(v).name}`" for k, v in meta["datasets"].items())
        + ".",
        "",
        "Lower is better for NLL, Brier, ECE and error rate; error-detection AUROC is how well the "
        "uncertainty (entropy of the predictive, or mutual information) ranks wrong predictions above "
        "right ones (0.5 = chance). Candidates per test set: "
        + ", ".join(f"{k} {v}" for k, v in meta["test_sets"].items())
        + ".",
        "",
    ]
    for sname, g in table.groupby("test set", sort=False):
        lines += [
            f"## {sname}",
            "",
            "| predictor | T | " + " | ".join(KEYS) + " |",
            "|---|---|" + "---|" * len(KEYS),
        ]
        for _, r in g.iterrows():
            label = r["predictor"] + (" + temperature" if r["scaled"] else "")
            lines.append(
                f"| {label} | {r['temperature']:.2f} | " + " | ".join(f"{r[k]:.4f}" for k in KEYS) + " |"
            )
        lines.append("")
    lines += [f"![{p.stem}](uncertainty/{p.name})" for p in figs]
    path = out / "uncertainty.md"
    path.write_text("\n".join(lines) + "\n")
    print(path)
    return path


if __name__ == "__main__":
    main()
