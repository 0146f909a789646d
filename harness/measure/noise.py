"""Timing noise: how much repeated timings of the same work disagree (no torch, so settings checks can use it)."""

from __future__ import annotations

import statistics


def relative_spread(times: list[float]) -> float | None:
    """How much repeated timings of the same work disagree: 1.4826 x MAD / median.

    A robust relative standard deviation (the median absolute deviation, scaled to match
    a standard deviation for normal noise): one slow outlier cannot inflate it, while a
    machine that other processes load in bursts spreads it widely. None for fewer than two.
    """
    if len(times) < 2:
        return None
    from scipy.stats import median_abs_deviation  # scipy.stats takes a second to import: not before it is needed

    return float(median_abs_deviation(times, scale="normal")) / statistics.median(times)
