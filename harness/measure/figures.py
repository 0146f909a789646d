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
