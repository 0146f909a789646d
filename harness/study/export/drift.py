"""The end of a study's session: the best feasible trial paired with the baseline, and the machine's drift.

A study measures its trials one at a time, minutes apart: their times rank presets, but dividing two of them
divides two moments of a machine that other processes load and unload. So a study quotes a speed-up only from
a paired measurement (:mod:`harness.measure.pairing`): at the end of each session the best feasible trial's
preset is generated again with the baseline beside every video, interleaved. The baseline's seconds in those
pairs, against the baseline trial's, also show how far the machine's speed drifted while the trials ran.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
import optuna

from harness.measure import pairing, tracking
from harness.measure.pairing import PairedSpeedup
from harness.measure.plan import plan
from harness.measure.results import recorded
from harness.measure.session import measure_in_run, open_session
from harness.study.engine.floors import baseline_trial, best_feasible, is_baseline
from harness.study.engine.objective import Objective

log = logging.getLogger(__name__)


def pair_best(objective: Objective, study: optuna.Study, repeats: int) -> dict[str, Any] | None:
    """Measure the best feasible trial's preset paired with the baseline (a child run of kind ``pairing``), or the
    baseline alone when no other trial is feasible (kind ``drift``); record the drift and the speed-up.

    Args:
        objective: the study's objective (its trial configs).
        study: the study.
        repeats: pairs per prompt x seed.

    Returns:
        The record appended to the study's user attribute ``baseline_drift`` (``was_s``, ``now_s``, ``drift``,
        ``after_trials``, and ``trial`` with ``speedup`` when a trial was paired); None without a baseline trial.
    """
    baseline = baseline_trial(study.get_trials(deepcopy=False))
    if baseline is None:
        return None
    best = best_feasible(study)
    paired = best is not None and best.number != baseline.number
    trial = best if paired else baseline
    name = trial.user_attrs.get("preset_name", f"trial-{trial.number}")
    cfg = objective.trial_cfg(trial.params, name, {"repeats": repeats})
    plan_ = plan(cfg)
    kind = "pairing" if paired else "drift"
    tags = {"kind": kind, "study": study.study_name, "trial_number": str(trial.number)}
    title = f"#{trial.number} paired with the baseline" if paired else "baseline re-measured (drift check)"
    with tracking.run(title, nested=True, tags=tags):
        summary = measure_in_run(cfg, plan_, open_session(cfg, plan_), paired=paired)
        speedup: PairedSpeedup | None = summary.paired
        now_s = speedup.baseline_s if speedup else summary.seconds_per_video
        record = {"was_s": baseline.value, "now_s": now_s, "drift": now_s / baseline.value - 1,
                  "after_trials": len(study.get_trials(deepcopy=False))}  # fmt: skip
        if speedup is not None:
            record.update(trial=trial.number, speedup=speedup.to_dict())
            record_pairing(study, trial.number, speedup, "the end of a search session, the search's seeds")
        mlflow.log_metric("baseline_drift", record["drift"])
    study.set_user_attr("baseline_drift", [*study.user_attrs.get("baseline_drift", []), record])
    return record


def record_pairing(study: optuna.Study, trial: int, speedup: PairedSpeedup, where: str) -> None:
    """Keep a trial's paired speed-up on the study (user attribute ``pairings``), for reports to quote."""
    record = {"trial": trial, "speedup": speedup.to_dict(), "where": where}
    study.set_user_attr("pairings", [*study.user_attrs.get("pairings", []), record])


def _latest_record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    for record in reversed(study.user_attrs.get("pairings", [])):
        if record["trial"] == trial.number:
            return record
    return None


def latest_pairing(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> PairedSpeedup | None:
    """The latest paired speed-up measured for a trial (at a session's end, or by harness.select), or None."""
    record = _latest_record(study, trial)
    return PairedSpeedup.from_dict(record["speedup"]) if record else None


def pairs_text(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """``12 pairs: harness.select, held-out seeds [100, 101]``: how many pairs the latest speed-up has, and where
    they were measured (empty where the trial has none)."""
    record = _latest_record(study, trial)
    if record is None:
        return ""
    where = record.get("where")
    return f"{record['speedup']['pairs']} pairs" + (f": {where}" if where else "")


def speedup_cell(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """A trial's paired speed-up cell (:func:`harness.measure.pairing.speedup_cell`) from its latest pairing."""
    return pairing.speedup_cell(latest_pairing(study, trial), is_baseline(trial))


def noise_lines(study: optuna.Study, bound: float) -> list[str]:
    """What the study's timings were measured under: NOISY trials, and the baseline's drift."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    noisy = [t.number for t in complete if recorded(t).noisy]
    lines = []
    if noisy:
        lines.append(
            f"NOISY timing in {len(noisy)} of {len(complete)} complete trials ({noisy}): their times "
            f"spread more than timing.noise_bound {bound:.0%}; measure again on a quiet machine"
        )
    for record in study.user_attrs.get("baseline_drift", []):
        flag = " -- NOISY: the machine's speed moved more than the noise bound" if abs(record["drift"]) > bound else ""
        paired = ""
        if "speedup" in record:
            paired = f"; trial #{record['trial']} paired with it: {PairedSpeedup.from_dict(record['speedup']).cell()}"
        lines.append(
            f"baseline re-measured after {record['after_trials']} trials: {record['was_s']:.3f} s -> "
            f"{record['now_s']:.3f} s ({record['drift']:+.1%}){flag}{paired}"
        )
    return lines
