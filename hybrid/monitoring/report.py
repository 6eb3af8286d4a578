"""A drift report: every applicable test on (reference, current), printed and written as JSON and
Markdown. Tests whose input is missing (no scores without a model, say) are listed as skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hybrid.io import write_text_atomic
from hybrid.monitoring.detectors import DRIFT_TESTS, MonitorSample, build_tests


def drift_report(
    reference: MonitorSample,
    current: MonitorSample,
    *,
    tests: list[str] | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Results of the named tests (default: all registered), with ``drifted`` overall (any test).

    Each test alarms at ``alpha``; the overall flag is uncorrected across tests, so on drift-free data
    it fires at up to ``len(tests) * alpha`` (pass ``alpha / len(tests)`` for a Bonferroni bound)."""
    results, skipped = [], {}
    for test in build_tests(tests, alpha=alpha, seed=seed):
        missing = [
            role
            for role, s in (("reference", reference), ("current", current))
            if getattr(s, test.needs) is None
        ]
        if missing:
            skipped[test.name] = f"no {test.needs} in the {' and '.join(missing)} sample"
            continue
        results.append(test.fit(reference).test(current).as_dict())
    return {
        "alpha": alpha,
        "n_reference": len(reference),
        "n_current": len(current),
        "drifted": any(r["drifted"] for r in results),
        "results": results,
        "skipped": skipped,
        "tests_available": DRIFT_TESTS.names(),
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    lines = [
        f"reference: {report['n_reference']} candidates; current: {report['n_current']} candidates; "
        f"alpha = {report['alpha']}",
        "",
        "| test | statistic | p-value | drift |",
        "|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['test']} | {r['statistic']:.4g} | {r['p_value']:.3g} | {'YES' if r['drifted'] else 'no'} |"
        )
    for name, why in report["skipped"].items():
        lines.append(f"| {name} | | | skipped: {why} |")
    ks = next((r for r in report["results"] if r["test"] == "ks"), None)
    if ks and ks.get("top_features"):
        lines += ["", "features that moved most (KS, adjusted p):"]
        lines += [f"- {k}: KS {v['ks']:.3f}, p {v['p_adjusted']:.3g}" for k, v in ks["top_features"].items()]
    lines += [
        "",
        "overall (any test; uncorrected across tests): "
        + ("DRIFT" if report["drifted"] else "no drift detected"),
    ]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """``drift.json`` and ``drift.md`` in ``out_dir`` (each written atomically); returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("drift.json", json.dumps(report, indent=2, default=str)),
        ("drift.md", format_report(report)),
    ):
        write_text_atomic(out / name, text)
    return out / "drift.json"
