"""Metrics of a real-bogus model on real survey alerts that carry no truth, only weak labels.

Real ZTF alerts carry ZTF's own real-bogus scores: ``rb`` (a random forest on alert features; Mahabal
et al. 2019, PASP 131, 038002) and ``drb`` (the deep real-bogus CNN braai, Duev et al. 2019, MNRAS 489,
3582). With ``drb`` as a weak label -- above :data:`DRB_REAL` "real", below :data:`DRB_BOGUS` "bogus",
the alerts in between left out -- a model's ROC AUC and its bootstrap interval say how far it agrees
with ZTF's best classifier; ``rb`` scored the same way is the reference a model should beat.
``drb`` against its own labels is 1 by construction and is listed only to make that plain.

What an alert says about the object (nothing here is truth either):

* known solar-system objects: ZTF's ``ssdistnr``, the distance to the nearest known asteroid or comet
  (MPC), within :data:`SSO_RADIUS_ARCSEC` (negative: none);
* catalogued AGN and variable stars: a class per alert given by the caller, e.g. from a broker's
  SIMBAD cross-match (Fink's ``cdsxmatch``, mapped with :func:`simbad_class`) or from a catalog's
  object ids.

This module only computes; reading alerts and scoring them is :mod:`hybrid.bench.real`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from hybrid.evaluation.metrics import bootstrap_auc

#: drb above this: a weak "real" label; below :data:`DRB_BOGUS`: "bogus"; between: left out
DRB_REAL = 0.9
DRB_BOGUS = 0.5
#: a known solar-system object within this distance (arcsec, ZTF ``ssdistnr``) marks an asteroid alert
SSO_RADIUS_ARCSEC = 5.0

#: SIMBAD object types (the names of Fink's ``cdsxmatch``) of active galactic nuclei: the AGN branch
#: of the SIMBAD hierarchy (Seyferts, LINERs, quasars, blazars and BL Lacs, radio galaxies)
AGN_TYPES = frozenset(
    {
        "AGN", "AGN_Candidate", "Seyfert", "Seyfert_1", "Seyfert_2", "LINER", "QSO", "QSO_Candidate",
        "Blazar", "Blazar_Candidate", "BLLac", "BLLac_Candidate", "RadioG",
    }
)  # fmt: skip
#: SIMBAD object types of variable stars: the V* branch (pulsating, eruptive, rotating, eclipsing),
#: cataclysmic variables and novae, and young stellar objects known for their variability
VARIABLE_STAR_TYPES = frozenset(
    {
        "V*", "V*?", "Irregular_V*", "Orion_V*", "Eruptive*", "Erupt*RCrB", "RCrB_Candidate",
        "PulsV*", "PulsV*delSct", "PulsV*bCep", "PulsV*RVTau", "PulsV*WVir", "pulsV*SX", "gammaDor",
        "Cepheid", "deltaCep", "RRLyr", "Candidate_RRLyr", "Mira", "Candidate_Mi*", "LPV*", "Candidate_LP*",
        "RotV*", "RSCVn", "RSCVnV*", "BYDra", "EllipVar", "EB*", "Candidate_EB*", "CataclyV*",
        "Candidate_CV*", "Nova", "Nova_Candidate", "DwarfNova", "Symbiotic*", "Candidate_Symb*",
        "TTau*", "Candidate_TTau*", "Ae*", "Be*",
    }
)  # fmt: skip


def simbad_class(otype: str | None) -> str:
    """``"agn"``, ``"variable_star"`` or ``""`` for a SIMBAD object type (as in Fink's ``cdsxmatch``)."""
    if otype in AGN_TYPES:
        return "agn"
    if otype in VARIABLE_STAR_TYPES:
        return "variable_star"
    return ""


def drb_weak_labels(drb: np.ndarray) -> np.ndarray:
    """1.0 where ``drb`` > :data:`DRB_REAL`, 0.0 where ``drb`` < :data:`DRB_BOGUS`, NaN otherwise."""
    drb = np.asarray(drb, float)
    return np.where(drb > DRB_REAL, 1.0, np.where(drb < DRB_BOGUS, 0.0, np.nan))


def known_sso(ssdistnr: np.ndarray) -> np.ndarray:
    """Alerts within :data:`SSO_RADIUS_ARCSEC` of a known solar-system object (ZTF ``ssdistnr``)."""
    d = np.asarray(ssdistnr, float)
    return (d >= 0) & (d < SSO_RADIUS_ARCSEC)


def _auc_row(y: np.ndarray, score: np.ndarray, n_boot: int, seed: int) -> tuple[float, list[float]]:
    ok = np.isfinite(score)
    if ok.sum() < len(score):
        y, score = y[ok], score[ok]
    if y.all() or not y.any():
        return float("nan"), [float("nan"), float("nan")]
    auc, (lo, hi) = bootstrap_auc(y, score, n_boot=n_boot, seed=seed)
    return auc, [lo, hi]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 else float("nan")


def real_alert_metrics(
    table: pd.DataFrame,
    *,
    types: Iterable[str],
    threshold: float = 0.5,
    score: str = "score",
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Weak-label metrics of a model's scores on real ZTF alerts.

    Args:
        table: one row per alert with the model's ``score`` and ``p_<type>`` columns, ``source`` (the
            input file), ZTF's ``ztf_rb``, ``ztf_drb`` and ``ztf_ssdistnr``, and optionally
            ``catalog_class`` (``"agn"``, ``"variable_star"`` or ``""``, see :func:`simbad_class`).
        types: the model's transient types (its ``p_<type>`` columns).
        threshold: the model's operating threshold on ``score``.
        score: the score column.
        n_boot: bootstrap resamples of the AUC intervals (seeded by ``seed``).

    Returns:
        A JSON-ready dict: ``auc_vs_drb`` with ``auc_vs_drb_ci`` (95%), ``spearman_drb``, the same AUC
        for ``rb`` (``rb_auc_vs_drb``, ``rb_auc_vs_drb_ci``, ``spearman_rb_drb``) and ``drb``
        (``drb_auc_vs_drb``), counts of the weak labels, ``recall`` at ``threshold`` on each catalogued
        class and on known solar-system objects (with drb >= 0.5 on the same alerts for reference),
        ``types_by_file`` (argmax type counts) and ``by_file`` (n, weak labels, AUC, share above threshold).
    """
    types = list(types)
    s = table[score].to_numpy(float)
    drb, rb = table["ztf_drb"].to_numpy(float), table["ztf_rb"].to_numpy(float)
    weak = drb_weak_labels(drb)
    lab = np.isfinite(weak)
    y = weak[lab].astype(bool)
    auc, ci = _auc_row(y, s[lab], n_boot, seed)
    rb_auc, rb_ci = _auc_row(y, rb[lab], n_boot, seed)
    out: dict = {
        "n_alerts": len(table),
        "n_weak_real": int(y.sum()),
        "n_weak_bogus": int((~y).sum()),
        "n_excluded": int((~lab).sum()),
        "weak_labels": f"drb > {DRB_REAL}: real; drb < {DRB_BOGUS}: bogus; others excluded",
        "threshold": float(threshold),
        "n_boot": n_boot,
        "auc_vs_drb": auc,
        "auc_vs_drb_ci": ci,
        "spearman_drb": _spearman(s, drb),
        "rb_auc_vs_drb": rb_auc,
        "rb_auc_vs_drb_ci": rb_ci,
        "spearman_rb_drb": _spearman(rb, drb),
        "drb_auc_vs_drb": float(roc_auc_score(y, drb[lab])) if 0 < y.sum() < len(y) else float("nan"),
    }
    groups = {"known_sso": known_sso(table["ztf_ssdistnr"].to_numpy(float))}
    if "catalog_class" in table:
        cls = table["catalog_class"].fillna("").to_numpy(str)
        groups |= {"agn": cls == "agn", "variable_star": cls == "variable_star"}
    out["recall"] = {
        name: {
            "n": int(sel.sum()),
            "recall": float((s[sel] >= threshold).mean()) if sel.any() else float("nan"),
            "drb_ge_0.5": float((drb[sel] >= 0.5).mean()) if sel.any() else float("nan"),
        }
        for name, sel in groups.items()
    }
    probs = table[[f"p_{t}" for t in types]].to_numpy(float)
    assigned = np.asarray(types, object)[probs.argmax(axis=1)]
    out["types_by_file"] = {}
    out["by_file"] = {}
    for src in dict.fromkeys(table["source"]):
        sel = (table["source"] == src).to_numpy()
        name = Path(str(src)).name
        counts = pd.Series(assigned[sel]).value_counts()
        out["types_by_file"][name] = {t: int(counts.get(t, 0)) for t in types}
        ys, ls = weak[sel], lab[sel]
        both = ls.any() and 0 < ys[ls].sum() < ls.sum()
        out["by_file"][name] = {
            "n": int(sel.sum()),
            "n_weak_real": int((ys == 1).sum()),
            "n_weak_bogus": int((ys == 0).sum()),
            "auc_vs_drb": float(roc_auc_score(ys[ls] == 1, s[sel][ls])) if both else float("nan"),
            "share_above_threshold": float((s[sel] >= threshold).mean()),
        }
    return out


def plot_score_histograms(table: pd.DataFrame, path: str | Path, *, threshold: float = 0.5) -> Path:
    """Score histograms, one panel per input file, split by the drb weak label; written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(table["source"]))
    fig, axes = plt.subplots(1, len(sources), figsize=(4 * len(sources), 3.2), squeeze=False)
    weak = drb_weak_labels(table["ztf_drb"].to_numpy(float))
    bins = np.linspace(0, 1, 21)
    for ax, src in zip(axes[0], sources, strict=True):
        sel = (table["source"] == src).to_numpy()
        s = table["score"].to_numpy(float)[sel]
        w = weak[sel]
        parts = [s[w == 1], s[w == 0], s[~np.isfinite(w)]]
        labels = [f"drb > {DRB_REAL} ({len(parts[0])})", f"drb < {DRB_BOGUS} ({len(parts[1])})"]
        labels.append(f"excluded ({len(parts[2])})")
        ax.hist(parts, bins=bins, stacked=True, label=labels, color=["tab:blue", "tab:red", "0.7"])
        ax.axvline(threshold, color="k", lw=0.8, ls="--")
        ax.set(title=Path(str(src)).name, xlabel="model score", ylabel="alerts")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    from hybrid.evaluation.evaluate import save_figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)
