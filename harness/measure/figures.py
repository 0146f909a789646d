"""One way to save a matplotlib figure, off-screen (no display on servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(figure: Any, path: Path) -> Path:
    """Lay out, write as PNG and close a matplotlib figure."""
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def ratio_plot(ratios: Any, steps: int) -> Any:
    """MagCache's calibrated magnitude ratio of each step (1 = the residual kept its size)."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(range(len(ratios)), list(ratios), "o-")
    axis.axhline(1.0, color="gray", lw=0.8)
    axis.set(xlabel="step", ylabel="magnitude ratio", title=f"MagCache ratios, calibrated at {steps} steps")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure
