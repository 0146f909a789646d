"""Tables people read at the end of a run: one row per preset measured."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from rich.console import Console
from rich.table import Table

# Summaries of the presets measured in this process, in order (a multirun runs its jobs
# in one process with Hydra's basic launcher).
MEASURED: list[dict[str, Any]] = []


def summary_table(rows: list[dict[str, Any]], title: str = "presets measured") -> Table:
    """A table of preset summaries; speed-up is against the row named ``baseline`` if present.

    Args:
        rows: summaries returned by ``harness.measure.session.measure_preset``.
        title: table title.

    Returns:
        A rich table.
    """
    baseline = next((row for row in rows if row["name"] in ("baseline", "video_fast")), None)
    table = Table(title=title)
    for column in (
        "preset",
        "size (WxH)",
        "frames",
        "steps",
        "solver",
        "shift",
        "guide",
        "median wall s",
        "speed-up",
        "step s",
        "CLIP",
        "PSNR dB",
        "SSIM",
    ):
        table.add_column(column, justify="left" if column in ("preset", "solver") else "right")
    for row in rows:
        speed_up = f"{baseline['median_wall_time_s'] / row['median_wall_time_s']:.2f}x" if baseline else "-"
        table.add_row(
            row["name"],
            row["size"].replace("*", "x"),
            str(row["frames"]),
            str(row["steps"]),
            row["solver"],
            f"{row['shift']:g}",
            f"{row['guidance']:g}",
            f"{row['median_wall_time_s']:.3f}",
            speed_up,
            f"{row['median_step_time_s']:.4f}",
            _fmt(row.get("mean_clip_score"), ".1f"),
            _fmt(row.get("mean_psnr_db"), ".1f"),
            _fmt(row.get("mean_ssim"), ".3f"),
        )
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_summary(rows: list[dict[str, Any]], title: str = "presets measured") -> None:
    """Print the summary table to the terminal."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # off a terminal rich assumes 80 columns and elides numbers
    console.print(summary_table(rows, title))


class SweepSummary(Callback):
    """Hydra callback: after a multirun, print one table comparing every preset measured."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        MEASURED.clear()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if len(MEASURED) > 1:
            print_summary(MEASURED, title="presets compared (speed-up vs baseline)")
