"""Paired speed-ups: a preset and the baseline timed interleaved in one process, never two commands apart.

A speed-up divides two times. Taken from two commands, minutes apart, it divides two machines: another
process may load one and not the other (22.86x was once printed for about 1.5x). Here every video is generated
twice in a row, once by the preset and once by the baseline, same prompt and seed, in alternating order (the
preset first, then the baseline first, ...), so a load that comes and goes falls on both sides of most pairs.
The speed-up is the median of the pairs' ratios (baseline seconds / preset seconds) with a 95% percentile
bootstrap interval of that median, as rigorous benchmarking tools report it (pyperf, hyperfine; Kalibera and
Jones, "Rigorous benchmarking in reasonable time"). Only from :data:`MIN_PAIRS` pairs on: with fewer, the
percentile bootstrap of a median says "95%" of an interval that holds far less often (simulated with
lognormal noise and no real speed-up, its lower bound cleared 1 for 25% of 2-pair measurements, 6.5% of
4-pair, 3.3% of 6-pair and 3% of 12-pair ones; a 95% interval should let 2.5% through).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
MIN_PAIRS = 6  # fewer pairs get no interval (see the module's docstring): a speed-up, but not one to rely on
NOT_PAIRED = "—"


@dataclass(frozen=True)
class PairedSpeedup:
    """How many times faster a preset ran than the baseline, measured in pairs."""

    median: float  # median of the pairs' ratios, baseline seconds / preset seconds
    low: float | None  # the 95% bootstrap interval of that median (None with fewer than MIN_PAIRS pairs)
    high: float | None
    pairs: int
    baseline_s: float  # median seconds of the baseline's videos in the pairs
    preset_s: float  # median seconds of the preset's videos in the pairs
    baseline_times: tuple[float, ...] = ()  # each pair's seconds, so that measurements can be pooled
    preset_times: tuple[float, ...] = ()  # (records written before they were kept have none)

    @property
    def interval(self) -> str:
        """``[1.52, 1.71]``, or why there is none."""
        if self.low is None:
            return f"({self.pairs} pair{'s' if self.pairs > 1 else ''}: too few for a 95% interval, {MIN_PAIRS} needed)"
        return f"[{self.low:.2f}, {self.high:.2f}]"

    def cell(self) -> str:
        """``1.62x [1.52, 1.71]``: the speed-up and its 95% interval."""
        return f"{self.median:.2f}x {self.interval}"

    def clears(self, threshold: float = 1.0) -> bool:
        """Whether the whole interval lies above ``threshold`` (faster beyond doubt at 95%)."""
        return self.low is not None and self.low > threshold

    def to_metrics(self) -> dict[str, float]:
        """MLflow metrics: ``speedup_vs_baseline`` and its interval, the pairs, both medians."""
        metrics = {
            "speedup_vs_baseline": self.median,
            "speedup_pairs": float(self.pairs),
            "paired_baseline_s": self.baseline_s,
            "paired_preset_s": self.preset_s,
        }
        if self.low is not None:
            metrics.update(speedup_ci_low=self.low, speedup_ci_high=self.high)
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> PairedSpeedup:
        """Read back :meth:`to_dict` as a study keeps it (JSON: lists for tuples)."""
        times = {key: tuple(record.get(key, ())) for key in ("baseline_times", "preset_times")}
        return cls(**{**record, **times})

    def pooled_with(self, later: PairedSpeedup) -> PairedSpeedup:
        """This measurement's pairs and a later one's, as one measurement (more pairs: a tighter interval).

        Raises:
            ValueError: either keeps no times of its pairs (a record written before they were kept).
        """
        for each in (self, later):
            if len(each.baseline_times) != each.pairs:
                raise ValueError(f"a paired speed-up of {each.pairs} pairs keeps no times of them: it cannot be pooled")
        return paired_speedup([*self.baseline_times, *later.baseline_times], [*self.preset_times, *later.preset_times])


def speedup_cell(paired: PairedSpeedup | None, is_baseline: bool) -> str:
    """The paired speed-up with its 95% interval, ``baseline`` for the baseline itself, or ``—`` (not paired)."""
    if is_baseline:
        return "baseline"
    return paired.cell() if paired is not None else NOT_PAIRED


def paired_speedup(baseline_s: list[float], preset_s: list[float], seed: int = 0) -> PairedSpeedup:
    """The speed-up of paired timings.

    Args:
        baseline_s: the baseline's seconds, one per pair.
        preset_s: the preset's seconds, in the same pairs.
        seed: the bootstrap's seed (the interval is reproducible).

    Returns:
        The median ratio and its 95% percentile-bootstrap interval (none under :data:`MIN_PAIRS` pairs).

    Raises:
        ValueError: no pairs, or lists of different lengths.
    """
    if not preset_s or len(baseline_s) != len(preset_s):
        raise ValueError(
            f"paired timings need as many baseline as preset times, got {len(baseline_s)} and {len(preset_s)}"
        )
    ratios = np.array(baseline_s) / np.array(preset_s)
    low = high = None
    if len(ratios) >= MIN_PAIRS:
        from scipy.stats import bootstrap  # scipy.stats takes a second to import: a refused input never needs it

        found = bootstrap(
            (ratios,), np.median, confidence_level=CONFIDENCE, method="percentile", n_resamples=RESAMPLES,
            rng=np.random.default_rng(seed),
        ).confidence_interval  # fmt: skip
        low, high = float(found.low), float(found.high)
    return PairedSpeedup(
        median=float(np.median(ratios)),
        low=low,
        high=high,
        pairs=len(ratios),
        baseline_s=statistics.median(baseline_s),
        preset_s=statistics.median(preset_s),
        baseline_times=tuple(float(s) for s in baseline_s),
        preset_times=tuple(float(s) for s in preset_s),
    )


def preset_first(pair_index: int) -> bool:
    """Whether the preset goes first in this pair: it alternates, so neither side always runs on a warmer machine."""
    return pair_index % 2 == 0
