"""Drift monitoring: two-sample tests of current candidates against the training-era reference (PSI
on scores, per-feature KS with correction, MMD on image embeddings, a classifier two-sample test),
stream replay with detection delay and false alarms, and the report behind ``hybrid drift``."""

from hybrid.monitoring.detectors import (
    DRIFT_TESTS,
    DriftResult,
    DriftTest,
    MonitorSample,
    adjust_p_values,
    build_tests,
    mmd_permutation,
    psi,
)
from hybrid.monitoring.report import drift_report, format_report, write_report
from hybrid.monitoring.stream import replay, summarize

__all__ = [
    "DRIFT_TESTS",
    "DriftResult",
    "DriftTest",
    "MonitorSample",
    "adjust_p_values",
    "build_tests",
    "drift_report",
    "format_report",
    "mmd_permutation",
    "psi",
    "replay",
    "summarize",
    "write_report",
]
