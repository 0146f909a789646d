"""Tables people read at the end of a run: one row per preset measured."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from rich.console import Console
from rich.table import Table

from harness.measure import pairing
from harness.measure.pairing import MIN_PAIRS, NOT_PAIRED
from harness.measure.results import Summary

# Summaries of the presets measured in this process, in order (a multirun runs its jobs
# in one process with Hydra's basic launcher).
MEASURED: list[Summary] = []


COLUMNS = (
    "preset",
    "output (WxH, frames, s)",
    "generated",
    "steps",
    "solver",
    "shift",
    "guide",
    "s/video (spread)",
    "speed-up",
    "s per video-s",
    "CLIP",
    "PSNR dB",
    "SSIM",
)


def _time_cell(row: Summary) -> str:
    cell = f"{row.seconds_per_video:.3f}"
    if row.spread is not None:
        cell += f" ±{row.spread:.0%}"
    return cell + (" NOISY" if row.timing_noisy else "")


def speedup_cell(row: Summary) -> str:
    """A row's paired speed-up cell (:func:`harness.measure.pairing.speedup_cell`)."""
    return pairing.speedup_cell(row.paired, row.is_baseline)


def _cells(row: Summary) -> list[str]:
    return [
        row.name,
        row.output_spec + (" *" if row.spec_change else ""),
        f"{row.size.replace('*', 'x')} x {row.frames}",
        str(row.steps),
        row.solver,
        f"{row.shift:g}",
        f"{row.guidance:g}",
        _time_cell(row),
        speedup_cell(row),
        f"{row.per_video_second_s:.3f}",
        _fmt(row.mean("clip_score"), ".1f"),
        _fmt(row.mean("psnr_db"), ".1f"),
        _fmt(row.mean("ssim"), ".3f"),
    ]


def summary_table(rows: list[Summary], title: str = "presets measured") -> Table:
    """A table of preset summaries; each speed-up is its own paired measurement against the baseline.

    Args:
        rows: summaries returned by ``harness.measure.session.measure_preset``.
        title: table title.

    Returns:
        A rich table.
    """
    notes = []
    if any(speedup_cell(row) == NOT_PAIRED for row in rows):
        notes.append(
            f"{NOT_PAIRED}: no speed-up without the baseline measured beside the preset in the same command "
            "(timing.pair=false); run it with timing.pair=true"
        )
    if any(row.paired is not None for row in rows):
        notes.append(
            "speed-up: the baseline generated beside each video, alternating which goes first; median of the "
            "pairs' ratios [95% bootstrap interval]"
        )
    if any(row.paired is not None and row.paired.low is None for row in rows):
        notes.append(
            f"an interval needs {MIN_PAIRS} pairs (prompts x seeds x timing.repeats): add seeds, e.g. "
            "prompts.seeds=[0,1,2], or timing.repeats=3"
        )
    if floor := next((row.noise_floor for row in rows if row.noise_floor), ""):
        notes.append(f"PSNR beside its {floor} (measured by harness.audit)")
    if any(row.spec_change for row in rows):
        notes.append("* output differs from the baseline's: scored against the baseline's own video, resampled")
    if any(row.timing_noisy for row in rows):
        notes.append(
            "NOISY: the times of its videos spread more than timing.noise_bound; measure again on a quiet machine"
        )
    table = Table(title=title, caption="\n".join(notes) or None)
    for column in COLUMNS:
        table.add_column(
            column, justify="left" if column in ("preset", "solver", "output (WxH, frames, s)") else "right"
        )
    for row in rows:
        table.add_row(*_cells(row))
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_summary(rows: list[Summary], title: str = "presets measured") -> None:
    """Print the summary table to the terminal."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # off a terminal rich assumes 80 columns and elides numbers
    console.print(summary_table(rows, title))


class SweepSummary(Callback):
    """Hydra callback: after a multirun, print one table comparing every preset measured."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        MEASURED.clear()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if len(MEASURED) > 1:
            print_summary(MEASURED, title="presets compared (each speed-up paired with the baseline in its own job)")
