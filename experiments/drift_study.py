"""Drift study: replay candidate streams through the drift tests; detection delay and false alarms.

    python experiments/drift_study.py [--window 250] [--segment 2000] [--alpha 0.01] [OVERRIDES...]

The monitored model is member 0 of the uncertainty study's ensemble (trained on the base dataset of
experiments/shift_data.py; trained here if missing). The reference is the base validation and test
splits. Each stream is ``--segment`` candidates of new, unchanged fields (seed 1) followed by
``--segment`` candidates of seed-2 fields that are unchanged (the drift-free stream) or seen with
worse seeing, through another subtraction, or by another survey; candidates arrive in random order
within a segment. Windows of ``--window`` candidates are tested with PSI (scores), KS (features, Holm),
MMD (image embeddings) and the classifier two-sample test (features). Writes reports/drift.md,
reports/drift/{windows,summary}.csv and plots.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from shift_data import BASE, DESCRIPTIONS, MODEL, STREAMS, base_data, dataset, study_parser

from hybrid.monitoring import MonitorSample, build_tests, drift_report, format_report, replay, summarize
from hybrid.monitoring.describe import describe_split, load_split
from hybrid.uncertainty import train_ensemble

AFTER = {
    "no change": "clean-2",
    "seeing degrades": "seeing",
    "subtraction changes": "naive",
    "survey changes": "atlas",
}
TESTS = ["psi", "ks", "mmd", "classifier"]
#: exchangeable units of the tests: whole exposures (field/epoch), or candidates taken as independent
UNITS = ("exposures", "candidates")


def _units(sample: MonitorSample, units: str) -> MonitorSample:
    return (
        sample if units == "exposures" else MonitorSample(sample.scores, sample.features, sample.embeddings)
    )


def main() -> Path:
    parser = study_parser(__doc__)
    parser.add_argument("--window", type=int, default=250, help="candidates per window")
    parser.add_argument("--segment", type=int, default=2000, help="candidates before and after the change")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level per test and window")
    parser.add_argument("--model-dir", type=Path, default=Path("outputs/studies/uncertainty"))
    parser.add_argument("--permutations", type=int, default=200, help="permutations of KS and MMD")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    cfg, dm = base_data(args.overrides)
    (model,) = train_ensemble(cfg, dm, 1, args.model_dir, enable_model_summary=False)
    names, channels = dm.feature_names, dm.channel_names
    reference = MonitorSample.concat([describe_split(model, dm.splits[s], names) for s in ("val", "test")])

    rng = np.random.default_rng(0)

    def segment(key: str) -> MonitorSample:
        sample = describe_split(model, load_split(dataset(STREAMS[key]), names, channels, model=model), names)
        return sample.take(rng.permutation(len(sample))[: args.segment])

    before = segment("clean-1")
    windows, summaries, examples = [], [], {}
    for stream, key in AFTER.items():
        after = segment(key)
        change = None if stream == "no change" else len(before)
        # candidate-level tests only where their false alarms are the question: the drift-free stream
        for units in UNITS if stream == "no change" else UNITS[:1]:
            ref, cur = (_units(s, units) for s in (reference, MonitorSample.concat([before, after])))
            tests = build_tests(TESTS, alpha=args.alpha)
            for t in tests:
                if hasattr(t, "n_permutations"):
                    t.n_permutations = args.permutations
            w = replay(tests, ref, cur, window=args.window, change_at=change)
            s = summarize(w, change)
            for table in (w, s):
                table.insert(0, "units", units)
                table.insert(0, "stream", stream)
            windows.append(w)
            summaries.append(s)
        examples[stream] = drift_report(reference, after, tests=TESTS, alpha=args.alpha)
    windows, summary = pd.concat(windows), pd.concat(summaries)
    meta = {
        "window": args.window,
        "permutations": args.permutations,
        "segment": args.segment,
        "alpha": args.alpha,
        "n_reference": len(reference),
        "overrides": [*BASE, *MODEL, *args.overrides],
        "after": {k: DESCRIPTIONS[v] for k, v in AFTER.items()},
        "model_trained_on": json.loads((args.model_dir / "member-0" / "metrics.json").read_text())["dataset"],
        "datasets": {
            "reference": str(dm.root),
            **{k: str(dataset(STREAMS[k])) for k in ("clean-1", *AFTER.values())},
        },
        "seconds": round(time.time() - t0, 1),
    }
    return _write(windows, summary, examples, meta, args.out)


def _plot(windows: pd.DataFrame, alpha: float, path: Path) -> Path:
    streams = list(dict.fromkeys(windows["stream"]))
    fig, axes = plt.subplots(1, len(streams), figsize=(4.2 * len(streams), 3.6), sharey=True)
    for ax, stream in zip(axes, streams, strict=True):
        g = windows[windows["stream"] == stream]
        for test, t in g.groupby("test", sort=False):
            ax.plot(t["end"], np.clip(t["p_value"], 1e-12, 1), "o-", ms=3, label=test)
        if g["after_change"].any():
            ax.axvline(g.loc[~g["after_change"], "end"].max(), color="k", lw=1, ls=":", label="change")
        ax.axhline(alpha, color="grey", lw=0.8, ls="--")
        ax.set(yscale="log", xlabel="candidates seen", title=stream)
    axes[0].set_ylabel("p-value per window")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write(windows: pd.DataFrame, summary: pd.DataFrame, examples: dict, meta: dict, out: Path) -> Path:
    d = out / "drift"
    d.mkdir(parents=True, exist_ok=True)
    windows.to_csv(d / "windows.csv", index=False)
    summary.to_csv(d / "summary.csv", index=False)
    (d / "run.json").write_text(json.dumps({**meta, "reports": examples}, indent=2, default=str))
    plot = _plot(windows[windows["units"] == "exposures"], meta["alpha"], d / "p_values.png")
    lines = [
        "# Drift monitoring: detection delay and false alarms on replayed streams",
        "",
        "Written by `python experiments/drift_study.py`. The monitored model is the fused model trained "
        "on the base dataset (80 small ZTF-like fields, experiments/shift_data.py); the reference is its "
        f"validation and test splits ({meta['n_reference']} candidates). Each stream is {meta['segment']} "
        "candidates of new unchanged fields, then "
        f"{meta['segment']} candidates after the change, in windows of {meta['window']}; every test runs "
        f"on every window at alpha = {meta['alpha']} ({meta['permutations']} permutations for KS and MMD). "
        f"Ran in {meta['seconds']:.0f} s on 2 shared CPU cores.",
        "",
        "Datasets (content-hashed cache names): model trained on "
        f"`{Path(meta['model_trained_on']).name}`; "
        + ", ".join(f"{k} `{Path(v).name}`" for k, v in meta["datasets"].items())
        + ". A different hash between the training data and the reference means the pipeline config "
        "changed in between; reference and streams share one config, so the tests compare like with like.",
        "",
        "After the change point: "
        + "; ".join(f"**{k}**: {v}" for k, v in meta["after"].items())
        + ". A false alarm is an alarm in a window before the change (in the drift-free stream, in any "
        "window); the delay is the number of post-change candidates seen up to the end of the first "
        "alarmed window.",
        "",
        "Candidates of one exposure share its seeing, depth and sky, so they are not independent draws. "
        "With `units = exposures` the tests take whole exposures (field and epoch) as the exchangeable "
        "units (group permutations for KS and MMD, a group-wise split for the classifier; PSI's chi-square "
        "null has no such option); with `units = candidates` they take candidates as independent, as "
        "textbook two-sample tests do (run on the drift-free stream only, where their false alarms are "
        "the question).",
        "",
        "| stream | units | test | false alarms | alarm rate after change | detection delay (candidates) |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        delay = "not detected" if not r["detected"] else f"{r['detection_delay']:.0f}"
        if r["stream"] == "no change":
            delay = "-"
        after = "-" if np.isnan(r["alarm_rate_after_change"]) else f"{r['alarm_rate_after_change']:.2f}"
        alarms = f"{r['false_alarms']} / {r['windows_before_change']}"
        lines.append(f"| {r['stream']} | {r['units']} | {r['test']} | {alarms} | {after} | {delay} |")
    lines += ["", f"![p-values](drift/{plot.name})", ""]
    for stream, rep in examples.items():
        lines += [
            f"## `hybrid drift`-style report: reference vs the whole post-change segment ({stream})",
            "",
        ]
        lines += [format_report(rep)]
    path = out / "drift.md"
    path.write_text("\n".join(lines) + "\n")
    print(path)
    return path


if __name__ == "__main__":
    main()
