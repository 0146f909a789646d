"""The study's MLflow run at a glance: its winner's headline metrics and a description people read first."""

from __future__ import annotations

import mlflow
import optuna

from harness.measure.results import recorded
from harness.study.engine import space
from harness.study.engine.floors import best_feasible, status
from harness.study.export.drift import latest_pairing


def winner_metrics(study: optuna.Study) -> dict[str, float]:
    """The best feasible trial's headline metrics (and its paired speed-up), for the study's own run."""
    metrics = {"trials": float(len(study.get_trials(deepcopy=False)))}
    best = best_feasible(study)
    if best is None:
        return metrics
    metrics.update(recorded(best).headline())
    metrics["best_feasible_time_s"] = best.value
    paired = latest_pairing(study, best)
    if paired is not None:
        metrics.update(paired.to_metrics())
    return metrics


def study_note(study: optuna.Study) -> str:
    """A markdown description of the study: floors, counts, the winner and how to look further."""
    trials = study.get_trials(deepcopy=False)
    counts = {
        state: sum(status(t) == state for t in trials) for state in ("feasible", "infeasible", "pruned", "failed")
    }
    lines = [
        f"**Study `{study.study_name}`**: the fastest preset that keeps every floor "
        f"({'; '.join(study.user_attrs.get('floors', [])) or 'no floors'}).",
        f"Trials: {len(trials)} ({', '.join(f'{n} {s}' for s, n in counts.items())}).",
        winner_line(study),
        f"Report: `python -m harness.report study={study.study_name}`; export the winner, verified on held-out "
        f"seeds: `python -m harness.select study={study.study_name}`.",
    ]
    return "\n\n".join(lines)


def winner_line(study: optuna.Study) -> str:
    """One line: the best feasible trial, its settings, time, scores and paired speed-up (or that there is none)."""
    best = best_feasible(study)
    if best is None:
        return "No feasible trial yet."
    attrs, params = best.user_attrs, best.params
    settings = space.shown(params)
    scores = ", ".join(f"{label} {recorded(best).mean(metric):.3g}" for label, metric in (("PSNR dB", "psnr_db"),
                       ("CLIP", "clip_score")) if recorded(best).mean(metric) is not None)  # fmt: skip
    paired = latest_pairing(study, best)
    speed = f"paired speed-up {paired.cell()}" if paired else "speed-up not paired yet"
    name = attrs.get("preset_name", "searched")
    return f"Winner: trial #{best.number} ({name}; {settings}): {best.value:.3g} s/video, {scores}; {speed}."


def record_on_study_run(study: optuna.Study) -> None:
    """Log the winner's metrics and the description (``mlflow.note.content``) on the active study run."""
    mlflow.log_metrics(winner_metrics(study))
    best = best_feasible(study)
    if best is not None:
        mlflow.set_tag("best_trial", str(best.number))
    mlflow.set_tag("mlflow.note.content", study_note(study))
