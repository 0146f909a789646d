"""Timing drift within a study: the baseline measured again at the end of a session.

A study's speed-ups divide by the baseline trial's time, measured when the study began.
If the machine got busier or quieter since, every later trial's time is off by as much;
re-measuring the baseline at the end of each session makes that drift visible.
"""

from __future__ import annotations

import logging

import mlflow
import optuna

from harness.measure import tracking
from harness.measure.plan import plan
from harness.measure.session import measure_in_run, open_session
from harness.study.objective import Objective

log = logging.getLogger(__name__)


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's complete baseline trial, or None."""
    return next(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("preset_name") == "baseline"
        ),
        None,
    )


def check_drift(objective: Objective, study: optuna.Study) -> dict | None:
    """Measure the baseline again (as a child run of kind ``drift``) and record how far its time moved.

    Returns:
        ``{"was_s", "now_s", "drift", "after_trials"}``, also appended to the study's user
        attribute ``baseline_drift``; None when the study has no complete baseline.
    """
    baseline = baseline_trial(study)
    if baseline is None:
        return None
    cfg = objective.trial_cfg(baseline.params, "baseline")
    plan_ = plan(cfg)
    tags = {"kind": "drift", "study": study.study_name, "trial_number": str(baseline.number)}
    with tracking.run("baseline re-measured (drift check)", nested=True, tags=tags):
        summary = measure_in_run(cfg, plan_, open_session(cfg, plan_))
        record = {
            "was_s": baseline.value,
            "now_s": summary["median_wall_time_s"],
            "drift": summary["median_wall_time_s"] / baseline.value - 1,
            "after_trials": len(study.get_trials(deepcopy=False)),
        }
        mlflow.log_metric("baseline_drift", record["drift"])
    study.set_user_attr("baseline_drift", [*study.user_attrs.get("baseline_drift", []), record])
    return record


def noise_lines(study: optuna.Study, bound: float) -> list[str]:
    """What the study's timings were measured under: NOISY trials, and the baseline's drift."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    noisy = [t.number for t in complete if t.user_attrs.get("timing_noisy")]
    lines = []
    if noisy:
        lines.append(
            f"NOISY timing in {len(noisy)} of {len(complete)} complete trials ({noisy}): their times "
            f"spread more than timing.noise_bound {bound:.0%}; measure again on a quiet machine"
        )
    for record in study.user_attrs.get("baseline_drift", []):
        flag = " -- NOISY: the machine's speed moved more than the noise bound" if abs(record["drift"]) > bound else ""
        lines.append(
            f"baseline re-measured after {record['after_trials']} trials: {record['was_s']:.3f} s -> "
            f"{record['now_s']:.3f} s ({record['drift']:+.1%}){flag}"
        )
    return lines
