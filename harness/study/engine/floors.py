"""Quality floors and feasibility: a trial is feasible when it meets every floor.

Each floor becomes one Optuna constraint ``floor_<metric>`` = threshold - value (feasible
when <= 0), set with ``trial.set_constraint``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Mapping

import optuna
from omegaconf import DictConfig, OmegaConf

from harness.checks import check_number
from harness.measure.results import recorded

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


def holds(slacks: Mapping[str, float]) -> bool:
    """Whether every floor holds: each slack (threshold - value, as Optuna's constraints) is <= 0."""
    return all(value <= 0 for value in slacks.values())


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Complete, with every constraint <= 0."""
    return trial.state == optuna.trial.TrialState.COMPLETE and bool(trial.constraints) and holds(trial.constraints)


def config_errors(study: optuna.Study) -> set[int]:
    """Trials that failed for a configuration error (study attribute ``config_errors``): they never count."""
    return set(study.user_attrs.get("config_errors", []))


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
    """The fastest feasible trial among these, or None.

    Trials are measured one at a time, so a load that comes and goes reorders their measured times. Among the
    feasible trials whose times lie within their timing noise of the fastest (each trial's relative spread over
    its videos), the one that does the least work (transformer calls x tokens, which the cost model's
    prediction follows) wins; then the measured time.
    """
    candidates = [t for t in trials if feasible(t)]
    if not candidates:
        return None
    fastest = min(candidates, key=lambda t: t.value)
    spreads = [recorded(t).spread for t in candidates if recorded(t).spread]
    typical = statistics.median(spreads) if spreads else 0.0

    def noise(trial: optuna.trial.FrozenTrial) -> float:
        return recorded(trial).spread or typical

    tied = [t for t in candidates if t.value <= fastest.value * (1 + max(noise(t), noise(fastest)))]
    return min(tied, key=lambda t: (work(t), t.value))


def work(trial: optuna.trial.FrozenTrial) -> float:
    """A trial's transformer work per video (calls x tokens), infinite when it recorded none."""
    cost = trial.user_attrs.get("cost")
    return cost["calls"] * cost["tokens"] if cost else float("inf")


def counts_toward(trial: optuna.trial.FrozenTrial, uncounted: set[int] = frozenset()) -> bool:
    """Whether a trial is one of the study's ``n_trials``: finished for a reason of its own.

    Args:
        trial: the trial.
        uncounted: numbers of trials that failed for a configuration error (:func:`config_errors`).
    """
    states = optuna.trial.TrialState
    if trial.state in (states.COMPLETE, states.PRUNED):
        return True
    return trial.state == states.FAIL and "fail_reason" in trial.user_attrs and trial.number not in uncounted


def is_baseline(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial measured the baseline preset (enqueued first, named ``baseline``)."""
    return trial.user_attrs.get("preset_name") == "baseline"


def baseline_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The complete baseline trial among these (floors and speed-ups are relative to it), or None."""
    return next((t for t in trials if is_baseline(t) and t.state == optuna.trial.TrialState.COMPLETE), None)


def shortfalls(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """By how much a trial missed each floor it missed, by metric name."""
    constraints = (trial.constraints or {}).items()
    return {key.removeprefix("floor_"): value for key, value in constraints if key.startswith("floor_") and value > 0}
