"""Cross-survey study: train on one simulated survey, test on another, with and without adapters.

    python experiments/cross_survey.py [--preset cpu|gpu|tiny] [--surveys ztf,goto,...] [--fields N]
        [--epochs E] [--n 0,10,100,1000] [--jobs K] [--parts pairs,dann,loso] [OVERRIDES...]

One command runs the whole grid through the library's `train` task (hybrid.training.train) and the
adapter stage (hybrid.adapters, Hydra group ``adapter/``), then writes reports/cross_survey.md, a CSV
of every number and the plots under reports/cross_survey/:

* pairs -- for every source survey, a model trained on raw stamps (``adapter=none``) and one on
  harmonised stamps and features (``adapter=harmonize``), each scored on every other survey as it is
  and after AdaBN, and after fine-tuning on N labelled target candidates;
* dann -- for every source survey, domain-adversarial training on harmonised data against all other
  surveys' unlabelled candidates (``adapter=harmonize_dann``), scored the same way;
* resample -- (not in the default ``--parts``) harmonisation without PSF homogenisation
  (``adapter.harmonize.fwhm=null``), which separates the cost of resampling from that of blurring;
* loso -- leave one survey out: trained on the other three surveys together (``extra_sources``) with
  ``none``, ``harmonize`` and ``harmonize_dann``, scored on the held-out survey.

Every run keeps its directory under outputs/cross_survey/<preset>/ (config.yaml, metrics.json with
flat ``target_<survey>_<adapter>_n<N>_<metric>`` keys); a run that finished is not trained again,
so the study resumes where it stopped. Extra arguments are Hydra overrides for every run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hybrid.adapters.stage import target_metrics
from hybrid.config import REPO_ROOT as ROOT
from hybrid.config import load_config
from hybrid.markdown import markdown_table
from hybrid.rundir import RunDir
from hybrid.tracking.runner import Job, StudyRunner, execution_only

SURVEYS = ("ztf", "goto", "atlas", "rubin")
PRESETS = {
    # name: (fields per survey, epochs, extra overrides)
    "tiny": (4, 1, ["sim.shape=[512,512]", "data.stamp_size=31", "preprocess.stamps.crop=null"]),
    "cpu": (12, 4, []),
    "gpu": (48, 10, ["trainer=gpu", "train.batch_size=512"]),
}
LABELS = {  # (training-time adapter, test-time adapter) -> label in tables and plots
    ("none", "none"): "none",
    ("none", "adabn"): "AdaBN",
    ("harmonize", "none"): "harmonise",
    ("harmonize", "adabn"): "harmonise + AdaBN",
    ("harmonize_dann", "none"): "harmonise + DANN",
    ("harmonize_dann", "adabn"): "harmonise + DANN + AdaBN",
    ("resample", "none"): "resample only",
    ("resample", "adabn"): "resample only + AdaBN",
}


def jobs(surveys: list[str], ns: list[int], parts: list[str]) -> list[tuple[str, list[str]]]:
    """(run name, overrides) of every training of the study."""
    n = "[" + ",".join(str(x) for x in ns) + "]"
    common = ["adapter.test_time=[none,adabn]", f"adapter.finetune.n={n}"]
    out = []
    for src in surveys:
        targets = "[" + ",".join(s for s in surveys if s != src) + "]"
        if "pairs" in parts:
            for adapter in ("none", "harmonize"):
                out.append(
                    (
                        f"pairs/{src}/{adapter}",
                        [f"survey={src}", f"adapter={adapter}", f"adapter.targets={targets}"],
                    )
                )
    for src in surveys:
        targets = "[" + ",".join(s for s in surveys if s != src) + "]"
        if "dann" in parts:
            out.append(
                (f"dann/{src}", [f"survey={src}", "adapter=harmonize_dann", f"adapter.targets={targets}"])
            )
        if "resample" in parts:  # harmonisation without the PSF step: which of the two costs transfer
            overrides = ["adapter=harmonize", "adapter.harmonize.fwhm=null", f"adapter.targets={targets}"]
            out.append((f"resample/{src}", [f"survey={src}", *overrides]))
    if "loso" in parts and len(surveys) > 2:
        for held in surveys:
            rest = [s for s in surveys if s != held]
            for adapter in ("none", "harmonize", "harmonize_dann"):
                out.append(
                    (
                        f"loso/{held}/{adapter}",
                        [
                            f"survey={rest[0]}",
                            f"adapter={adapter}",
                            "adapter.extra_sources=[" + ",".join(rest[1:]) + "]",
                            f"adapter.targets=[{held}]",
                        ],
                    )
                )
    return [(name, [*o, *common]) for name, o in out]


def _prepare_one(base: list[str], survey: str, variants: list[list[str]]) -> dict[str, str]:
    from hydra.utils import instantiate

    from hybrid.adapters import harmonize_dataset, survey_dataset

    raw = survey_dataset(load_config(base), survey)
    out = {"raw": str(raw)}
    for i, extra in enumerate(variants):
        cfg = load_config([*base, "adapter=harmonize", *extra])
        out["harmonized" if i == 0 else f"harmonized_{i}"] = str(
            harmonize_dataset(raw, instantiate(cfg.adapter.harmonize))
        )
    return out


def prepare_data(
    base: list[str], surveys: list[str], variants: list[list[str]], workers: int
) -> dict[str, dict[str, str]]:
    """Build every survey's dataset and its harmonised versions (``variants``: overrides of
    ``adapter=harmonize``) once, before the runs share them."""
    if workers <= 1:
        return {s: _prepare_one(base, s, variants) for s in surveys}
    with ProcessPoolExecutor(min(workers, len(surveys)), mp_context=get_context("spawn")) as pool:
        futures = {s: pool.submit(_prepare_one, base, s, variants) for s in surveys}
        return {s: f.result() for s, f in futures.items()}


def run_all(
    base: list[str], grid: list[tuple[str, list[str]]], out_dir: Path, workers: int, done: Callable[[], None]
) -> dict:
    """Train every job with the study runner (``workers`` at a time, in worker processes; datasets are
    built by :func:`prepare_data` first), calling ``done`` after each that finished; returns {run name:
    seconds}. Each run's log is ``out_dir/<run>.log``."""
    runner = StudyRunner(
        out_dir.parent,
        jobs=max(workers, 1),
        deadline=None,
        extra=[],
        build_workers=1,
        in_process=True,
        run_defaults=[],
        conf_name="cross_survey_conf",
        skip_finished=False,  # the train task skips a run only when its config is the same
        mp_context="spawn",  # this process has imported torch (the harmonised datasets)
        on_record=lambda record: record["status"] == "done" and done(),
    )
    records = runner.run([Job(out_dir.name, name, None, [*base, *o], None) for name, o in grid])
    return {r["name"]: r["seconds"] for r in records if r["status"] == "done"}


def collect(out_dir: Path, grid: list[tuple[str, list[str]]], surveys: list[str]) -> pd.DataFrame:
    """One row per (run, target, test-time adapter, N) from the runs' metrics.json."""
    rows = []
    for name, _ in grid:
        run = RunDir(out_dir / name)
        if not run.finished():
            continue
        m = run.metrics()
        part = name.split("/")[0]
        adapter = {"dann": "harmonize_dann", "resample": "resample"}.get(part, name.split("/")[-1])
        held = name.split("/")[1]
        source = held if part != "loso" else "+".join(s for s in surveys if s != held)
        for (target, tta, n), vals in target_metrics(m).items():
            rows.append(
                {
                    "run": name,
                    "study": part,
                    "source": source,
                    "target": target,
                    "adapter": LABELS.get((adapter, tta), f"{adapter}+{tta}"),
                    "n": n,
                    "source_auc_trained": m["auc"],
                    "target_in_domain_auc": np.nan,
                    "target_n_test": m.get(f"target_{target}_n_test"),
                    "target_n_test_real": m.get(f"target_{target}_n_test_real"),
                    **vals,
                }
            )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # the in-domain reference: each target survey's own raw model on its own test split
    own = {}
    for name, _ in grid:
        if name.startswith("pairs/") and name.endswith("/none") and RunDir(out_dir / name).finished():
            own[name.split("/")[1]] = RunDir(out_dir / name).metrics()["auc"]
    df["target_in_domain_auc"] = df["target"].map(own)
    return df


def _table(df: pd.DataFrame, index: list[str], columns: str, value: str, fmt: str = "{:.3f}") -> str:
    t = df.pivot_table(index=index, columns=columns, values=value, aggfunc="mean")
    order = [c for c in LABELS.values() if c in t.columns]
    t = t[order]
    rows = [
        [*(key if isinstance(key, tuple) else (key,)), *("" if pd.isna(v) else fmt.format(v) for v in row)]
        for key, row in t.iterrows()
    ]
    return "\n".join(markdown_table([*index, *order], rows))


def plots(df: pd.DataFrame, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    cross = df[df["study"].isin(["pairs", "dann", "resample"])]
    targets = sorted(cross["target"].unique())
    ns = sorted(cross["n"].unique())
    xs = {n: i for i, n in enumerate(ns)}
    for metric, ylabel in (("auc", "target ROC AUC"), ("fnr_at_1pct_fpr", "target FNR at 1% FPR")):
        fig, axes = plt.subplots(
            1, len(targets), figsize=(3.6 * len(targets), 3.4), sharey=True, squeeze=False
        )
        for ax, t in zip(axes[0], targets, strict=True):
            sub = cross[cross["target"] == t]
            for label in LABELS.values():
                s = sub[sub["adapter"] == label].groupby("n")[metric].mean()
                if len(s):
                    ax.plot([xs[n] for n in s.index], s.values, "o-", ms=3, label=label)
            ref = sub["target_in_domain_auc"].dropna()
            if metric == "auc" and len(ref):
                ax.axhline(ref.iloc[0], color="k", lw=0.8, ls="--", label="trained on the target")
            ax.set_xticks(range(len(ns)), [str(n) for n in ns])
            ax.set(title=f"target: {t} (mean over sources)", xlabel="labelled target examples N")
        axes[0][0].set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        p = out / f"{metric}_vs_n.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    zero = cross[cross["n"] == 0]
    variants = [v for v in ("none", "harmonise + AdaBN", "harmonise + DANN") if v in set(zero["adapter"])]
    if variants:
        surveys = sorted(set(zero["source"]) | set(zero["target"]))
        fig, axes = plt.subplots(1, len(variants), figsize=(3.8 * len(variants), 3.5), squeeze=False)
        for ax, v in zip(axes[0], variants, strict=True):
            grid = np.full((len(surveys), len(surveys)), np.nan)
            for _, r in zero[zero["adapter"] == v].iterrows():
                grid[surveys.index(r["source"]), surveys.index(r["target"])] = r["auc"]
            for s in surveys:  # the diagonal: trained and tested on the same survey
                own = df[(df["study"] == "pairs") & (df["source"] == s)]["source_auc_trained"]
                if len(own):
                    grid[surveys.index(s), surveys.index(s)] = own.iloc[0]
            im = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis")
            for i in range(len(surveys)):
                for j in range(len(surveys)):
                    if np.isfinite(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8, color="w")
            ax.set_xticks(range(len(surveys)), surveys)
            ax.set_yticks(range(len(surveys)), surveys)
            ax.set(xlabel="test survey", ylabel="training survey", title=f"AUC, N=0: {v}")
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
        p = out / "auc_matrix.png"
        fig.savefig(p, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    loso = df[(df["study"] == "loso") & (df["n"] == 0)]
    if len(loso):
        fig, ax = plt.subplots(figsize=(6.5, 3.5))
        labels = [v for v in LABELS.values() if v in set(loso["adapter"])]
        held = sorted(loso["target"].unique())
        w = 0.8 / len(labels)
        for k, v in enumerate(labels):
            vals = [loso[(loso["target"] == h) & (loso["adapter"] == v)]["auc"].mean() for h in held]
            ax.bar(np.arange(len(held)) + k * w, vals, w, label=v)
        ax.set_xticks(np.arange(len(held)) + 0.4 - w / 2, held)
        ax.set(ylim=(0.5, 1.0), ylabel="held-out survey AUC", title="leave one survey out (N=0)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out / "loso_auc.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def plot_harmonised_examples(data: dict[str, dict[str, str]], out: Path) -> Path:
    """The same kind of candidate (a real, bright one) from each survey: raw and harmonised stamps."""
    from hybrid.data.dataset import read_dataset

    surveys = list(data)
    fig, axes = plt.subplots(2 * len(surveys), 3, figsize=(5.4, 3.6 * len(surveys)))
    for i, s in enumerate(surveys):
        raw, harm = read_dataset(data[s]["raw"]), read_dataset(data[s]["harmonized"])
        t = raw.candidates
        real = np.flatnonzero(t["truth_real"].to_numpy(bool) & (t["snr_psf"].to_numpy(float) > 20))
        row = int(real[0]) if len(real) else 0
        for k, (ds, tag) in enumerate(((raw, "raw"), (harm, "harmonised"))):
            for c, ch in enumerate(ds.meta["channels"]):
                ax = axes[2 * i + k, c]
                img = np.asarray(ds.stamps[row, c], float)
                lo, hi = np.nanpercentile(img, [1, 99.5]) if np.isfinite(img).any() else (0, 1)
                ax.imshow(img, origin="lower", cmap="gray", vmin=lo, vmax=hi)
                ax.set_xticks([])
                ax.set_yticks([])
                scale = ds.meta["pixel_scale"]
                ax.set_title(f'{s} {tag} {ch}\n{img.shape[0]} px x {scale}"', fontsize=7)
    fig.tight_layout()
    p = out / "harmonised_examples.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def _auc_and_fnr(df: pd.DataFrame, index: list[str]) -> list[str]:
    """Report lines: the target AUC and FNR at 1% FPR tables of ``df`` by ``index`` and adapter."""
    return [
        "Target AUC:",
        "",
        _table(df, index, "adapter", "auc"),
        "",
        "Target FNR at 1% FPR:",
        "",
        _table(df, index, "adapter", "fnr_at_1pct_fpr"),
        "",
    ]


def _command(argv: list[str]) -> str:
    """The command line without the (long, free-text) machine description."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--machine="):
            skip = False
            continue
        skip = a == "--machine"
        if not skip:
            out.append(a)
    return " ".join(out)


def report(df: pd.DataFrame, args: argparse.Namespace, base: list[str], seconds: dict, out: Path) -> Path:
    figs = out / args.name
    paths = plots(df, figs) if len(df) else []
    if df.empty:
        return out / f"{args.name}.md"
    df.to_csv(out / f"{args.name}.csv", index=False)
    cross = df[df["study"].isin(["pairs", "dann", "resample"])]
    zero = cross[cross["n"] == 0]
    lines = [
        "# Cross-survey adaptation",
        "",
        f"Written by `python experiments/cross_survey.py {_command(sys.argv[1:])}`.",
        "",
        "## What ran",
        "",
        f"- Machine: {args.machine}. {df['run'].nunique()} of the {args.planned} "
        f"planned trainings have finished and are in the tables"
        + (
            f"; this invocation trained {len(seconds)} of them in {args.wall / 60:.1f} min, "
            f"{args.jobs} at a time."
            if seconds
            else " (this invocation only rewrote the report)."
        ),
        f"- Parts run: {args.parts} (see the module docstring of experiments/cross_survey.py).",
        f"- Surveys: {', '.join(args.surveys)}; {args.fields} simulated fields each (ZOGY, truth labels, "
        "test split by object); the same pipeline config for every survey except the survey profile.",
        f"- Training: {args.epochs} epochs at most (early stopping on the source validation loss); "
        f"overrides for every run: `{' '.join(o for o in base if not execution_only(o))}`.",
        "- Adapters: `none` (raw stamps: each survey's pixels, the model's noise normalisation and central "
        'crop); `harmonise` (flux-conserving resampling to 1"/px, 31x31 px, PSF homogenised to 3.5" '
        "FWHM, noise normalised, features in uJy / arcsec / fractions); `resample only` (the same without "
        "the PSF step); AdaBN (BatchNorm and feature "
        "statistics re-estimated on the target's unlabelled training split); DANN (survey head behind "
        "gradient reversal, trained against all other surveys' unlabelled training splits at once); "
        f"fine-tuning on N = {', '.join(str(n) for n in args.n)} labelled target candidates "
        "(stratified sample of the target's training split).",
        "- Target test splits: "
        + ", ".join(
            f"{t} {int(g['target_n_test'].iloc[0])} candidates ({int(g['target_n_test_real'].iloc[0])} real)"
            for t, g in df.groupby("target")
        )
        + ".",
        "- Scores: target test split (by object, never seen in adaptation), without rotation averaging. "
        "FNR at 1% FPR. Source AUC kept: the adapted model on the source test split. One seed.",
        "",
    ]
    if len(zero):
        lines += [
            "## Target AUC without labelled target data (N = 0), by source and target",
            "",
            _table(zero, ["source", "target"], "adapter", "auc"),
            "",
            "## FNR at 1% FPR on the target (N = 0)",
            "",
            _table(zero, ["source", "target"], "adapter", "fnr_at_1pct_fpr"),
            "",
            "## Mean over all source-target pairs, by N",
            "",
            *_auc_and_fnr(cross, ["n"]),
            "Source AUC kept by the adapted model (the source models' own test AUC, with rotation "
            f"averaging, is {cross.groupby('source')['source_auc_trained'].first().round(3).to_dict()}):",
            "",
            _table(cross, ["n"], "adapter", "source_auc"),
            "",
        ]
        own = cross.groupby("target")["target_in_domain_auc"].first().dropna()
        if len(own):
            lines += [
                "In-domain reference (a raw model trained and tested on the target survey): "
                + ", ".join(f"{k} {v:.3f}" for k, v in own.items()),
                "",
            ]
    loso = df[df["study"] == "loso"]
    if len(loso):
        lines += [
            "## Leave one survey out (trained on the other three together)",
            "",
            *_auc_and_fnr(loso, ["target", "n"]),
        ]
    lines += ["## Plots", ""]
    lines += [
        f"![{p.stem}]({args.name}/{p.name})" for p in [*paths, figs / "harmonised_examples.png"] if p.exists()
    ]
    lines += ["", f"Every number is in [{args.name}.csv]({args.name}.csv).", ""]
    path = out / f"{args.name}.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    parser.add_argument("--surveys", default=",".join(SURVEYS))
    parser.add_argument("--fields", type=int, default=None, help="fields per survey (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: the preset's)")
    parser.add_argument("--n", default="0,10,100,1000", help="labelled target examples for fine-tuning")
    parser.add_argument("--parts", default="pairs,dann,loso", help="pairs, dann, loso, resample")
    parser.add_argument("--name", default="cross_survey", help="report name: reports/NAME.md, reports/NAME/")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at a time (processes)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--machine", default=f"{os.cpu_count()} CPU cores")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the report from the finished runs' metrics.json",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    fields, epochs, extra = PRESETS[args.preset]
    args.fields = args.fields or fields
    args.epochs = args.epochs or epochs
    args.surveys = args.surveys.split(",")
    args.n = [int(n) for n in args.n.split(",")]
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(args.jobs, 1))
    base = [
        *extra,
        f"data.n_fields={args.fields}",
        f"trainer.max_epochs={args.epochs}",
        f"data.workers={os.cpu_count() or 1}",
        "data.progress=false",
        "trainer.enable_progress_bar=false",
        "logger.wandb.enabled=false",
        f"train.threads={threads}",
        *args.overrides,
    ]
    run_root = ROOT / "outputs" / "cross_survey" / args.preset
    grid = jobs(args.surveys, args.n, args.parts.split(","))
    args.planned = len(grid)
    figs = args.out / args.name
    figs.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        cores = os.cpu_count() or 1
        workers = [f"data.workers={max(1, cores // len(args.surveys))}"]
        parts = args.parts.split(",")
        variants = [[]] if {"pairs", "dann", "loso"} & set(parts) else []
        variants += [["adapter.harmonize.fwhm=null"]] if "resample" in parts else []
        plot_harmonised_examples(prepare_data([*base, *workers], args.surveys, variants, args.jobs), figs)
    seconds: dict = {}
    start = time.perf_counter()

    def write() -> Path:
        args.wall = time.perf_counter() - start
        return report(collect(run_root, grid, args.surveys), args, base, seconds, args.out)

    if not args.report_only:
        seconds.update(run_all(base, grid, run_root, args.jobs, write))
    return write()


if __name__ == "__main__":
    print(main(sys.argv[1:]))
