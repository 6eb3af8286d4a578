"""Real ZTF alerts scored by models trained on simulated ZTF-like data, compared with ZTF's ``drb``.

    python experiments/cross_survey_ztf_real.py [--runs outputs/cross_survey/<preset>] [--alerts PATH]

The alerts are read with :mod:`hybrid.data.readers` -- the 51 fink-science alerts that
``python -m datasets.fink_alerts`` fetches into the cache, else the six of tests/fixtures/ztf_alerts --
and written as a dataset directory (:func:`~hybrid.data.readers.alerts_to_dataset`). They are scored
by the ZTF-trained models of the cross-survey study (experiments/cross_survey.py):

* ``pairs/ztf/none`` -- raw stamps, as trained, and after AdaBN on the alerts themselves (their
  statistics, no labels);
* ``pairs/ztf/harmonize`` -- the alerts harmonised like its training data (ZTF's 1.01"/px; the
  alerts carry no per-image seeing, so the ZTF profile's median seeing stands in), as trained and
  with AdaBN;
* ``dann/ztf`` -- domain-adversarial, harmonised.

The alerts have no truth labels. What can be compared is how each score distribution relates to the
deep real-bogus score ZTF itself attached to the same alerts (``drb``, Duev et al. 2019): Spearman
rank correlation, agreement of the ``score >= 0.5`` and ``drb >= 0.5`` decisions, and the histograms.
Writes reports/cross_survey_ztf_real.md and reports/cross_survey/ztf_real_vs_drb.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from hydra.utils import instantiate
from scipy.stats import spearmanr

from hybrid.adapters import adapt_batchnorm, harmonize_dataset
from hybrid.config import CONF_DIR
from hybrid.config import REPO_ROOT as ROOT
from hybrid.context.recipes import default_cache_dir
from hybrid.data.dataset import read_dataset, select_inputs
from hybrid.data.readers import alerts_to_dataset
from hybrid.data.readers.recipes import fink_dir
from hybrid.data.readers.ztf import ZTF_PIXEL_SCALE
from hybrid.export.from_run import load_run_model
from hybrid.models import HybridModel
from hybrid.rundir import RunDir
from hybrid.training.data import SplitTensors
from hybrid.training.train import score_split

FIXTURE = ROOT / "tests" / "fixtures" / "ztf_alerts" / "alerts.parquet"
MODELS = {"raw": "pairs/ztf/none", "harmonised": "pairs/ztf/harmonize", "harmonised + DANN": "dann/ztf"}


def alerts_split(dataset: Path, model: HybridModel) -> SplitTensors:
    """The alerts as an unlabelled split normalised by the model; features the alerts lack are NaN,
    imputed by the model with its indicator."""
    names = model.features.names if model.features is not None else []
    split = SplitTensors.from_inputs(select_inputs(dataset, features=names, impute="nan"))
    if model.image_encoder is not None:
        split.normalize_stamps(model.stamps)
    return split


def score(run_dir: Path, dataset: Path, *, adabn: bool) -> np.ndarray:
    model, _, _ = load_run_model(run_dir)
    split = alerts_split(dataset, model)
    if adabn:
        model = adapt_batchnorm(model, split)
    return score_split(model, split, rotation_average=True)["score"].to_numpy()


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository or to the cache."""
    for root, name in ((ROOT, ""), (default_cache_dir().resolve(), "<cache>/")):
        if path.resolve().is_relative_to(root):
            return name + str(path.resolve().relative_to(root))
    return str(path)


def main(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, default=ROOT / "outputs" / "cross_survey" / "cpu")
    parser.add_argument("--alerts", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args(argv)
    alerts = args.alerts or next(
        (p for p in (fink_dir() / "alerts.parquet", FIXTURE) if p.is_file()), FIXTURE
    )
    work = default_cache_dir() / "datasets"
    raw = alerts_to_dataset(alerts, work / f"ztf-real-alerts-{alerts.parent.name}")
    drb = read_dataset(raw).candidates["ztf_drb"].to_numpy(float)
    ztf = yaml.safe_load((CONF_DIR / "survey" / "ztf.yaml").read_text())
    seeing = {"sci": ztf["seeing_median"], "ref": ztf["seeing_median"] * ztf["reference_seeing_factor"]}
    seeing["diff"] = seeing["sci"]
    scores: dict[str, np.ndarray] = {}
    for label, name in MODELS.items():
        run = args.runs / name
        if not RunDir(run).finished():
            print(f"[ztf_real] {run}: no finished run; skipped")
            continue
        cfg = RunDir(run).config()
        data = raw
        if cfg.adapter.get("harmonize"):
            h = instantiate(cfg.adapter.harmonize)
            data = harmonize_dataset(raw, h, pixel_scale=ZTF_PIXEL_SCALE, fallback_fwhm=seeing)
        scores[label] = score(run, data, adabn=False)
        scores[f"{label} + AdaBN"] = score(run, data, adabn=True)
    rows = []
    for label, s in scores.items():
        rho = spearmanr(s, drb).statistic
        rows.append(
            {
                "model": label,
                "spearman_vs_drb": rho,
                "agree_at_0.5": float(np.mean((s >= 0.5) == (drb >= 0.5))),
                "mean_score": float(s.mean()),
                "frac_real_at_0.5": float(np.mean(s >= 0.5)),
            }
        )
    table = pd.DataFrame(rows)
    out_fig = args.out / "cross_survey" / "ztf_real_vs_drb.png"
    out_fig.parent.mkdir(parents=True, exist_ok=True)
    if scores:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        bins = np.linspace(0, 1, 21)
        axes[0].hist(drb, bins, histtype="step", color="k", lw=2, label="ZTF drb")
        for label, s in scores.items():
            axes[0].hist(s, bins, histtype="step", label=label)
            axes[1].plot(drb, s, "o", ms=4, alpha=0.7, label=label)
        axes[0].set(xlabel="real-bogus score", ylabel="alerts", title=f"{len(drb)} real ZTF alerts")
        axes[1].plot([0, 1], [0, 1], color="grey", lw=0.8)
        axes[1].set(xlabel="ZTF drb", ylabel="our score", title="same alerts")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_fig, dpi=110)
        plt.close(fig)
    lines = [
        "# Real ZTF alerts: models trained on simulated ZTF-like data against ZTF's drb",
        "",
        f"Written by `python experiments/cross_survey_ztf_real.py {' '.join(sys.argv[1:])}`. Alerts: "
        f"`{_shown(alerts)}` ({len(drb)} alerts read by "
        "hybrid.data.readers; fink-science 7.4.0, Apache-2.0). Models: the ZTF-trained runs of "
        f"`{_shown(args.runs)}` "
        "(experiments/cross_survey.py). The alerts have no truth labels, so this compares score "
        "distributions with ZTF's own deep real-bogus score `drb` (Duev et al. 2019), not accuracy. "
        "AdaBN here re-estimates the normalisation statistics on these alerts themselves (no labels). "
        "Harmonised models see the alerts resampled from 1.01\"/px with the ZTF profile's median seeing "
        "standing in for the per-image seeing that alerts do not carry. Scores are rotation-averaged.",
        "",
        f"ZTF drb on these alerts: mean {drb.mean():.3f}, {np.mean(drb >= 0.5):.0%} at or above 0.5.",
        "",
    ]
    if len(table):
        lines += [
            "| model | Spearman vs drb | agree at 0.5 | mean score | fraction >= 0.5 |",
            "|---|---|---|---|---|",
        ]
        for _, r in table.iterrows():
            lines.append(
                f"| {r['model']} | {r['spearman_vs_drb']:.3f} | {r['agree_at_0.5']:.3f} | "
                f"{r['mean_score']:.3f} | {r['frac_real_at_0.5']:.3f} |"
            )
        lines += ["", "![scores against drb](cross_survey/ztf_real_vs_drb.png)", ""]
    else:
        lines += ["No finished ZTF-trained runs were found; run experiments/cross_survey.py first.", ""]
    path = args.out / "cross_survey_ztf_real.md"
    path.write_text("\n".join(lines))
    table.to_csv(args.out / "cross_survey_ztf_real.csv", index=False)
    return path


if __name__ == "__main__":
    print(main(sys.argv[1:]))
