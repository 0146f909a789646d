"""Quality floors and feasibility: a trial is feasible when it meets every floor.

Each floor becomes one Optuna constraint ``floor_<metric>`` = threshold - value (feasible
when <= 0), set with ``trial.set_constraint``.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from omegaconf import DictConfig, OmegaConf

from harness.checks import check_number

FLOOR_METRICS = ("clip_score", "psnr_db", "ssim")


@dataclass(frozen=True)
class Floor:
    """A quality floor: ``metric`` >= ``value``, or >= ``ratio`` x the baseline's."""

    metric: str
    value: float | None = None
    ratio: float | None = None

    def threshold(self, baseline: dict[str, float]) -> float:
        if self.value is not None:
            return self.value
        return float(self.ratio) * baseline[self.metric]

    def describe(self) -> str:
        if self.value is not None:
            return f"{self.metric} >= {self.value:g}"
        return f"{self.metric} >= {self.ratio:g} x baseline"


def floors(cfg: DictConfig) -> list[Floor]:
    """The configured floors, checked.

    Raises:
        ValueError: unknown metric, not exactly one of ``value`` and ``ratio``, a value or ratio that is
            not a finite number (a ratio must be > 0), or a floor whose metric is switched off.
    """
    result = []
    for metric, spec in (cfg.search.floors or {}).items():
        if metric not in FLOOR_METRICS:
            raise ValueError(f"search.floors.{metric}: unknown metric; allowed: {list(FLOOR_METRICS)}")
        value, ratio = spec.get("value"), spec.get("ratio")
        if (value is None) == (ratio is None):
            raise ValueError(
                f"search.floors.{metric}={OmegaConf.to_container(spec)} must set exactly one of value, ratio"
            )
        if value is not None:
            value = check_number(f"search.floors.{metric}.value", value)
        if ratio is not None and not check_number(f"search.floors.{metric}.ratio", ratio) > 0:
            raise ValueError(f"search.floors.{metric}.ratio={ratio!r} must be > 0")
        if (metric == "clip_score" and not cfg.quality.clip) or (metric != "clip_score" and not cfg.quality.fidelity):
            raise ValueError(f"search.floors.{metric} needs its metric on (quality.clip / quality.fidelity)")
        result.append(Floor(metric, value, None if ratio is None else float(ratio)))
    return result


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Complete, with every constraint <= 0."""
    return (
        trial.state == optuna.trial.TrialState.COMPLETE
        and bool(trial.constraints)
        and all(value <= 0 for value in trial.constraints.values())
    )


def status(trial: optuna.trial.FrozenTrial) -> str:
    """feasible, infeasible, pruned, failed or running."""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return "feasible" if feasible(trial) else "infeasible"
    return {"PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name, trial.state.name.lower())


def failure(trial: optuna.trial.FrozenTrial) -> str:
    """Why a failed trial failed: its own error, a signal that stopped it (not counted), or its process ended."""
    if "fail_reason" in trial.user_attrs:
        return trial.user_attrs["fail_reason"]
    if "stopped_by" in trial.user_attrs:
        return f"stopped by {trial.user_attrs['stopped_by']} (not counted; measured again)"
    return "process ended mid-trial"


def best_feasible(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The fastest feasible trial, or None."""
    return fastest_feasible(study.get_trials(deepcopy=False))


def fastest_feasible(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The fastest feasible trial among these, or None."""
    candidates = [t for t in trials if feasible(t)]
    return min(candidates, key=lambda t: t.value) if candidates else None


def shortfalls(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """By how much a trial missed each floor it missed, by metric name."""
    constraints = (trial.constraints or {}).items()
    return {key.removeprefix("floor_"): value for key, value in constraints if key.startswith("floor_") and value > 0}
