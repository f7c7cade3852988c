"""Numbers over seeds: mean, spread and a 95% interval, computed with scipy.stats.

A number from one run is reported as n = 1 with no spread and no interval: never an invented one.
Snakemake imports this module for report labels; scipy is imported only where it computes.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95


def describe(values: list[float]) -> dict:
    """n, mean, sample standard deviation, the t-distribution 95% interval of the mean, min,
    max and the values themselves. With one value: std and the interval are None."""
    array = np.asarray(values, dtype=float)
    n = len(array)
    if n == 0:
        raise ValueError("no values to describe")
    mean = float(array.mean())
    summary = {
        "n": n,
        "mean": mean,
        "std": None,
        "ci95": None,
        "min": float(array.min()),
        "max": float(array.max()),
        "values": [float(value) for value in array],
    }
    if n > 1:
        # scipy.stats (half a second) only for replicates: Snakemake imports this module to
        # label the report, before any job, and must start fast
        from scipy import stats

        summary["std"] = float(array.std(ddof=1))
        if summary["std"] == 0:
            summary["ci95"] = [mean, mean]
        else:
            low, high = stats.t.interval(CONFIDENCE, df=n - 1, loc=mean, scale=stats.sem(array))
            summary["ci95"] = [float(low), float(high)]
    return summary


def percent(value: float | None) -> str:
    """A fraction as a percentage with two decimals; '—' for none."""
    return "—" if value is None else f"{100 * value:.2f}%"


def percent_with_spread(summary: dict) -> str:
    """'91.40% ± 0.31 (n=3)': mean and standard deviation in points; 'n=1' alone for one run."""
    mean = 100 * summary["mean"]
    if summary["std"] is None:
        return f"{mean:.2f}% (n={summary['n']})"
    return f"{mean:.2f}% ± {100 * summary['std']:.2f} (n={summary['n']})"
