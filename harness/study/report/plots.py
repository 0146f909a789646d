"""Pictures of a study: time against quality with the feasible front, the history, importances."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import optuna
from optuna.visualization import matplotlib as optuna_plots

from harness.measure.figures import save_figure
from harness.measure.results import recorded
from harness.study.engine.floors import feasible, status

STATE_STYLE = {
    "feasible": ("tab:green", "o"),
    "infeasible": ("tab:red", "x"),
    "pruned": ("tab:gray", "v"),
    "failed": ("black", "s"),
}


def plot_pareto(study: optuna.Study, path: Path) -> Path:
    """Time against quality (PSNR and CLIP), by state, with the feasible Pareto front."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.value is not None or recorded(t).measured]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, metric, name in (
        (axes[0], "psnr_db", "PSNR to baseline video (dB)"),
        (axes[1], "clip_score", "CLIP score"),
    ):
        for state, (color, marker) in STATE_STYLE.items():
            points = [
                (t.value, recorded(t).mean(metric), t)
                for t in trials
                if status(t) == state and t.value is not None and recorded(t).mean(metric) is not None
            ]
            if points:
                axis.scatter([p[0] for p in points], [p[1] for p in points], c=color, marker=marker, label=state)
            for x, y, t in points:
                if "preset_name" in t.user_attrs:
                    axis.annotate(
                        t.user_attrs["preset_name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8
                    )
        front = _front([(t.value, recorded(t).mean(metric)) for t in trials
                        if feasible(t) and recorded(t).mean(metric) is not None])  # fmt: skip
        if front:
            axis.step(
                [p[0] for p in front],
                [p[1] for p in front],
                where="post",
                c="tab:green",
                alpha=0.5,
                label="feasible front",
            )
        axis.set_xlabel("median wall time per video (s)")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"study {study.study_name}: time against quality")
    return save_figure(figure, path)


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both lower time and higher quality, by time."""
    front, best = [], float("-inf")
    for time_s, quality in sorted(points):
        if quality > best:
            front.append((time_s, quality))
            best = quality
    return front


def plot_history(study: optuna.Study, path: Path) -> Path:
    """Each trial's time by number and the best so far, infeasible trials greyed (Optuna's own plot, which reads
    the floors' constraints the harness writes)."""
    axis = optuna_plots.plot_optimization_history(study, target_name="seconds per video")
    axis.set_ylabel("median wall time per video (s)")
    return save_figure(axis.figure, path)


def plot_importances(study: optuna.Study, path: Path) -> Path | None:
    """Each parameter's importance for the time (Optuna's own plot), or None when too few trials tell it."""
    try:
        axis = optuna_plots.plot_param_importances(study, target_name="seconds per video")
    except (RuntimeError, ValueError):
        return None
    return save_figure(axis.figure, path)
