"""Replaying a stream of candidates through the drift tests, window by window.

The stream is cut into consecutive windows of ``window`` candidates; every test compares each window
with the reference sample. With a known change point (the index of the first drifted candidate), an
alarm in a window that ends at or before it is a false alarm, and the detection delay is the number
of post-change candidates seen up to the end of the first alarmed window after the change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hybrid.monitoring.detectors import DriftTest, MonitorSample


def replay(
    tests: list[DriftTest],
    reference: MonitorSample,
    stream: MonitorSample,
    *,
    window: int,
    change_at: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per (window, test): window, start, end (candidate indices), test, statistic, p_value,
    alarm, and ``after_change`` (the window holds post-change candidates)."""
    if window < 2:
        raise ValueError(f"window must be >= 2 candidates, got {window}")
    for t in tests:
        t.fit(reference)
    rows = []
    starts = range(0, len(stream) - window + 1, window)
    for w, start in enumerate(tqdm(starts, desc="windows", disable=not progress, leave=False)):
        cur = stream.take(np.arange(start, start + window))
        for t in tests:
            r = t.test(cur)
            rows.append(
                {
                    "window": w,
                    "start": start,
                    "end": start + window,
                    "test": r.test,
                    "statistic": r.statistic,
                    "p_value": r.p_value,
                    "alarm": r.drifted,
                    "after_change": change_at is not None and start + window > change_at,
                }
            )
    return pd.DataFrame(rows)


def summarize(windows: pd.DataFrame, change_at: int | None) -> pd.DataFrame:
    """Per test: windows before the change, false alarms among them, their rate, and the detection
    delay (candidates after the change up to the end of the first alarmed post-change window; NaN
    when never detected or when there is no change)."""
    rows = []
    for test, g in windows.groupby("test", sort=False):
        pre = g[~g["after_change"]]
        post = g[g["after_change"] & g["alarm"]]
        delay = float(post["end"].iloc[0] - change_at) if change_at is not None and len(post) else np.nan
        rows.append(
            {
                "test": test,
                "windows_before_change": len(pre),
                "false_alarms": int(pre["alarm"].sum()),
                "false_alarm_rate": float(pre["alarm"].mean()) if len(pre) else np.nan,
                "windows_after_change": int(g["after_change"].sum()),
                "detected": bool(len(post)),
                "detection_delay": delay,
                "alarm_rate_after_change": float(g.loc[g["after_change"], "alarm"].mean())
                if g["after_change"].any()
                else np.nan,
            }
        )
    return pd.DataFrame(rows)
